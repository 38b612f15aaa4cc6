"""The benchmark that guards speed (``make bench``, and a short version in CI).

One run measures, on this machine and side by side (so that the ratios hold on a
loaded, shared machine where absolute figures do not):

* model-only and end-to-end tiles per CPU-second (per second on a GPU) of each
  backend and precision, one CPU thread
  (:func:`~alosmap.predict.bench.run_bench`; a precision the device has no native
  arithmetic for is skipped, with the reason);
* the pipeline ceiling (:func:`~alosmap.predict.ceiling.run_ceiling`: a zero-cost
  model) on the host path (NumPy engine, NumPy model output: ONNX Runtime on the
  CPU) and the torch CPU path (NumPy engine, torch tensors out), classes only and
  with confidence and probabilities, in tiles per CPU-second;
* the peak RSS of the ceiling run at two scene sizes (each in a process of its own).

and reports ratios within the run: each precision ÷ fp32 of its backend, each
variant's end to end ÷ model-only, the ceiling ÷ the fastest model-only, the
torch CPU path ÷ the host path, peak RSS large ÷ small. :func:`check_ratios`
fails only on gross regressions of a ratio: an accepted precision slower than
fp32, a pipeline below :data:`MIN_PIPELINE_RATIO` of model-only, a ceiling not
above the model, a peak RSS that grows with the scene by more than
:data:`MAX_RSS_RATIO`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from alosmap.predict.bench import OnnxExporter

#: End to end ÷ model-only below this is a regression (the pipeline, not the
#: model, would set the speed).
MIN_PIPELINE_RATIO = 0.8
#: An accepted precision ÷ fp32 below this is a regression (it must not be slower).
MIN_PRECISION_RATIO = 1.0
#: Peak RSS 12000² ÷ 2000² above this is a regression: memory grows with the
#: scene (the target is 1.10, measured 1.02-1.07; rows held full width until
#: the last band came gave 1.38).
MAX_RSS_RATIO = 1.25


@dataclass(frozen=True)
class GuardPlan:
    """What one guard run measures.

    Attributes:
        preset: architecture of the random model (speed does not depend on weights).
        variants: ``--backends`` of ``alosmap bench``.
        size: side of the scene run end to end through ``predict``.
        batches: timed batches per variant (after a warm-up batch).
        ceiling_size: side of the ceiling's scene.
        rss_sizes: the two scene sides whose peak RSS is compared (None: skip).
        min_pipeline: end to end ÷ model-only below this fails the run.
        min_precision: an accepted precision ÷ fp32 below this fails the run.
    """

    preset: str
    variants: str
    size: int
    batches: int
    ceiling_size: int
    rss_sizes: tuple[int, int] | None
    min_pipeline: float = MIN_PIPELINE_RATIO
    min_precision: float = MIN_PRECISION_RATIO


#: ``make bench``: the small preset, 3000² end to end, 6000² ceiling, RSS at
#: 2000² and 12000².
FULL = GuardPlan("small", "torch,torch-bf16,onnx", 3000, 5, 6000, (2000, 12000))
#: The CI's short version (about a minute of CPU): 1536² has 64 windows, eight
#: full batches (a scene whose windows do not fill the last batch wastes its
#: padding, which would count against the pipeline), enough for the per-scene
#: start (opening the scene, the COG: about 0.3 CPU-s) to stay under a tenth; the
#: small preset, so that the model sets the time. Two timed batches on a shared CI
#: machine are noisy (pipeline ÷ model-only measured 0.84-0.85 here, bf16 ÷ fp32
#: 1.34), so its limits are wider: it is there for gross regressions only (the
#: bf16 trap was 150x slower; a pipeline that sets the speed, well below the model).
QUICK = GuardPlan(
    "small",
    "torch,torch-bf16,onnx",
    1536,
    2,
    1536,
    None,
    min_pipeline=0.65,
    min_precision=0.8,
)


def ceiling_child(workdir: Path, **kw: Any) -> dict[str, Any]:
    """:func:`~alosmap.predict.ceiling.run_ceiling` in a process of its own."""
    args = json.dumps({"workdir": str(workdir), **kw})
    proc = subprocess.run(
        [sys.executable, "-m", "alosmap.predict.ceiling", args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"ceiling child failed: {tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_guard(
    plan: GuardPlan, workdir: Path, export_onnx: OnnxExporter | None = None
) -> dict[str, Any]:
    """Measure ``plan`` (see the module) and return the JSON report with ratios.

    Args:
        plan: what to measure (:data:`FULL`, :data:`QUICK`).
        workdir: a folder for the scenes and maps.
        export_onnx: the ONNX exporter for the onnx variants
            (``alosmap.export.onnx.export_onnx``; the core does not import it).
    """
    from alosmap.predict.bench import BenchRequest, parse_variants, run_bench

    t0 = time.perf_counter()
    bench = run_bench(
        BenchRequest(
            variants=tuple(parse_variants(plan.variants)),
            preset=plan.preset,
            batch_sizes=(8,),
            batch_size=8,
            batches=plan.batches,
            agree_tiles=2,
            size=plan.size,
            threads=1,
        ),
        export_onnx=export_onnx,
    )
    ceilings = []
    for arrays in ("numpy", "torch"):
        for extras in (False, True):
            c = ceiling_child(
                workdir,
                size=plan.ceiling_size,
                arrays=arrays,
                engine="numpy",
                confidence=extras,
                probabilities=extras,
            )
            ceilings.append(c)
    rss = {}
    if plan.rss_sizes is not None:
        for s in plan.rss_sizes:
            rss[s] = ceiling_child(workdir, size=s)["peak_rss_mb"]
    ratios = guard_ratios(bench, ceilings, rss)
    report: dict[str, Any] = {
        "plan": plan.__dict__,
        "machine": bench.get("machine"),
        "bench": bench,
        "ceiling": ceilings,
        "peak_rss_mb": {str(k): v for k, v in rss.items()},
        "ratios": ratios,
        "seconds": time.perf_counter() - t0,
    }
    report["failures"] = check_ratios(
        ratios, min_pipeline=plan.min_pipeline, min_precision=plan.min_precision
    )
    return report


def guard_ratios(
    bench: dict[str, Any], ceilings: list[dict[str, Any]], rss: dict[int, float]
) -> dict[str, Any]:
    """The ratios of one run (see the module); a variant that failed is left out."""
    model: dict[str, float] = {}
    e2e: dict[str, float] = {}
    out: dict[str, Any] = {"precision_vs_fp32": {}, "pipeline_vs_model": {}}
    fp32: dict[str, float] = {}
    for v in bench["variants"]:
        if v.get("error") or not v.get("rows"):
            continue
        model[v["variant"]] = _rate(v["rows"][0])
        if v.get("e2e"):
            e2e[v["variant"]] = _rate(v["e2e"])
        if (v.get("precision") or "fp32") == "fp32":
            fp32.setdefault(v["backend"], model[v["variant"]])
    for v in bench["variants"]:
        name = v["variant"]
        if name in model and (v.get("precision") or "fp32") != "fp32":
            base = fp32.get(v["backend"])
            if base:
                out["precision_vs_fp32"][name] = model[name] / base
        if name in e2e:
            out["pipeline_vs_model"][name] = e2e[name] / model[name]
    out["skipped"] = {
        v["variant"]: v["skipped"] for v in bench["variants"] if v.get("skipped")
    }
    by = {(c["arrays"], c["probabilities"]): c["tiles_per_cpu_s"] for c in ceilings}
    out["ceiling_tiles_per_cpu_s"] = {
        f"{'host' if a == 'numpy' else 'torch-cpu'}"
        f"{'+conf+prob' if extras else ''}": tps
        for (a, extras), tps in by.items()
    }
    if model and ("numpy", False) in by:
        out["ceiling_vs_model"] = by[("numpy", False)] / max(model.values())
    if ("numpy", False) in by and ("torch", False) in by:
        out["torch_cpu_vs_host_ceiling"] = by[("torch", False)] / by[("numpy", False)]
    if len(rss) == 2:
        small, large = sorted(rss)
        out["rss_large_vs_small"] = rss[large] / rss[small]
    return out


def _rate(row: dict[str, Any]) -> float:
    """Tiles per CPU-second where measured (the CPU), else per second (a GPU)."""
    rate: float = row.get("tiles_per_cpu_s") or row["tiles_per_s"]
    return rate


def check_ratios(
    ratios: dict[str, Any],
    *,
    min_pipeline: float = MIN_PIPELINE_RATIO,
    min_precision: float = MIN_PRECISION_RATIO,
) -> list[str]:
    """One line per gross regression in ``ratios`` (empty: none)."""
    bad = [
        f"{name}: {r:.2f}x fp32 (an accepted precision must not be slower; "
        f"limit {min_precision})"
        for name, r in ratios["precision_vs_fp32"].items()
        if r < min_precision
    ]
    bad += [
        f"{name}: end to end {r:.2f} of model-only (< {min_pipeline})"
        for name, r in ratios["pipeline_vs_model"].items()
        if r < min_pipeline
    ]
    c = ratios.get("ceiling_vs_model")
    if c is not None and c < 1.0:
        bad.append(f"pipeline ceiling {c:.2f}x the model: the pipeline sets the speed")
    m = ratios.get("rss_large_vs_small")
    if m is not None and m > MAX_RSS_RATIO:
        bad.append(
            f"peak RSS {m:.2f}x from the small scene to the large one "
            f"(> {MAX_RSS_RATIO}): memory grows with the scene"
        )
    return bad


__all__ = [
    "FULL",
    "MAX_RSS_RATIO",
    "MIN_PIPELINE_RATIO",
    "MIN_PRECISION_RATIO",
    "QUICK",
    "GuardPlan",
    "ceiling_child",
    "check_ratios",
    "guard_ratios",
    "run_guard",
]
