#!/usr/bin/env python3
"""One-command GPU verification of alosmap: measure everything, write one report.

Run it through ``scripts/gpu_check.sh`` (which installs what is needed first) or
directly with a Python that has alosmap installed::

    python scripts/gpu_check.py [--quick] [--out DIR] [--budget S] [...]

Steps (each command in its own subprocess, with a time limit; a failure or a
timeout is recorded and the rest goes on):

1. ``environment``: nvidia-smi; torch, CUDA, cuDNN; ONNX Runtime and its
   providers; TensorRT; ``alosmap info``.
2. ``models``: random-weight models of each preset (``alosmap train init``), their
   fp32 ONNX export and fp32 / fp16 TensorRT engines (``alosmap export``), parity
   checked on the real ALOS-2 tile when it is found.
3. ``bench``: ``alosmap bench --json`` per preset: torch fp32/bf16/fp16, ONNX
   Runtime CUDA EP and TensorRT EP, TensorRT engines (fp32, fp16) at each batch
   size: tiles/s, memory, agreement with torch fp32.
4. ``ceiling``: ``alosmap bench --ceiling`` on CUDA and on the CPU.
5. ``e2e``: ``alosmap predict`` of a generated scene per backend (wall time,
   tiles/s, e2e ÷ model-only), and of the real ALOS-2 tile, whose maps are
   compared with torch fp32's.
6. ``pytest``: ``pytest -m gpu``.

Writes ``gpu_report.md`` and ``gpu_report.json`` into ``--out`` after every
command (a killed run leaves a partial report). Exit codes: 0 every command that
ran succeeded, 1 some failed or timed out (the report says which), 2 no CUDA GPU
(without ``--allow-cpu``) or a usage error, 130 interrupted.

Only the standard library is imported here: alosmap and its libraries run in the
subprocesses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "alosmap-gpu-check/1"
REAL_SCENE_NAME = "N23W161_20_sl_HH_F02DAR.tif"
#: Where the real ALOS-2 tile is looked for (first hit wins; ``--real-scene`` wins).
REAL_SCENE_DIRS = (
    REPO.parent / "shared" / "data" / "alos2_mosaic_N23W161_2020",
    REPO / "shared" / "data" / "alos2_mosaic_N23W161_2020",
    REPO / ".whl",
)
STEPS = ("environment", "models", "bench", "ceiling", "e2e", "pytest")
#: Share of the time budget each step may use; time a step leaves flows on.
SHARES = {
    "environment": 0.04,
    "models": 0.30,
    "bench": 0.32,
    "ceiling": 0.06,
    "e2e": 0.16,
    "pytest": 0.12,
}
#: Seconds kept back for each later step, so that none is starved by earlier ones.
STEP_MIN_S = {
    "environment": 10,
    "models": 20,
    "bench": 20,
    "ceiling": 10,
    "e2e": 20,
    "pytest": 20,
}
#: A step may run at least this long when the budget allows (the environment step
#: imports torch and ONNX Runtime, slow on a cold start).
STEP_FLOOR_S = {"environment": 90.0}
#: Seconds kept back at the end for the report.
END_RESERVE_S = 3.0
#: A command gets no less than this (else it is skipped for lack of budget).
MIN_CHECK_S = 2.0
TAIL_CHARS = 2000
PRESET_ORDER = ("tiny", "small", "paper")


@dataclass(frozen=True)
class VariantDef:
    """A model-only variant of the check: how ``alosmap bench`` runs it.

    Attributes:
        backends: the ``--backends`` value.
        group: variants of one group run in one ``alosmap bench`` call.
        needs: ``onnx`` or ``fp32``/``fp16`` (the engine) besides the model.
        gpu_only: skipped on the CPU flow, with ``cpu_reason``.
        cpu_reason: why it does not run on the CPU.
    """

    backends: str
    group: str
    needs: str | None = None
    gpu_only: bool = False
    cpu_reason: str = "needs a CUDA GPU"


VARIANTS: dict[str, VariantDef] = {
    "torch": VariantDef("torch", "main"),
    "torch-bf16": VariantDef("torch-bf16", "main"),
    "torch-fp16": VariantDef(
        "torch-fp16", "main", gpu_only=True, cpu_reason="fp16 autocast is CUDA only"
    ),
    "onnx": VariantDef("onnx", "main", needs="onnx"),
    "onnx-cuda": VariantDef(
        "onnx-cuda",
        "main",
        needs="onnx",
        gpu_only=True,
        cpu_reason="CUDA execution provider: needs a CUDA GPU (the CPU flow runs "
        "'onnx', the CPU EP, instead)",
    ),
    "onnx-trt": VariantDef(
        "onnx-trt",
        "onnx-trt",
        needs="onnx",
        gpu_only=True,
        cpu_reason="TensorRT execution provider: needs a CUDA GPU",
    ),
    "tensorrt-fp32": VariantDef(
        "tensorrt",
        "tensorrt-fp32",
        needs="fp32",
        gpu_only=True,
        cpu_reason="TensorRT engines: need a CUDA GPU",
    ),
    "tensorrt-fp16": VariantDef(
        "tensorrt",
        "tensorrt-fp16",
        needs="fp16",
        gpu_only=True,
        cpu_reason="TensorRT engines: need a CUDA GPU",
    ),
}
#: In order of importance (a short budget cuts the last ones): the TensorRT EP builds
#: its own engine, as long as an engine build, for the least used path.
GPU_DEFAULT_VARIANTS = (
    "torch",
    "torch-bf16",
    "torch-fp16",
    "onnx-cuda",
    "tensorrt-fp16",
    "tensorrt-fp32",
    "onnx-trt",
)
CPU_DEFAULT_VARIANTS = (*GPU_DEFAULT_VARIANTS[:4], "onnx", *GPU_DEFAULT_VARIANTS[4:])


@dataclass(frozen=True)
class E2EDef:
    """A backend of the end-to-end step: which file ``alosmap predict`` maps with.

    Attributes:
        model: ``safetensors``, ``onnx`` or ``fp16``/``fp32`` (an engine).
        precision: ``--precision`` (torch only).
        gpu_only: skipped on the CPU flow.
        cpu_reason: why.
    """

    model: str
    precision: str | None = None
    gpu_only: bool = False
    cpu_reason: str = "needs a CUDA GPU"


E2E_GPU = {
    "torch-fp16": E2EDef("safetensors", "fp16", gpu_only=True),
    "onnx": E2EDef("onnx"),
    "tensorrt-fp16": E2EDef(
        "fp16", gpu_only=True, cpu_reason="TensorRT engines: need a CUDA GPU"
    ),
}
E2E_CPU = {
    "torch": E2EDef("safetensors"),
    "torch-fp16": E2EDef(
        "safetensors", "fp16", gpu_only=True, cpu_reason="fp16 is CUDA only"
    ),
    "onnx": E2EDef("onnx"),
    "tensorrt-fp16": E2EDef(
        "fp16", gpu_only=True, cpu_reason="TensorRT engines: need a CUDA GPU"
    ),
}

# --------------------------------------------------------------------------------------
# running commands
# --------------------------------------------------------------------------------------


@dataclass
class Proc:
    """What a finished (or killed) command left."""

    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def _kill_group(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM the command's process group, SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(
    cmd: Sequence[str],
    limit_s: float,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Run ``cmd`` in its own process group; kill the whole group at ``limit_s``.

    Children of the command (``alosmap bench`` runs each variant in one) are in the
    group and die with it. Ctrl-C kills the group and is re-raised.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=max(0.1, limit_s))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        try:  # a grandchild that left the group may still hold the pipes
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = "", "(output lost: a process outside the group held it)"
    except BaseException:
        _kill_group(proc, grace=1.0)
        raise
    return Proc(
        proc.returncode, out or "", err or "", time.perf_counter() - t0, timed_out
    )


def failure_reason(proc: Proc) -> str:
    """One line: the last meaningful stderr line (``alosmap: error: …``), or the rc.

    Typer's usage-error box is unpacked (``No such option: --ceiling``); log lines
    and usage hints are left out.
    """
    lines = []
    for ln in (proc.stderr + "\n" + proc.stdout).splitlines():
        ln = re.sub(r"\x1b\[[0-9;]*m", "", ln)
        ln = re.sub(r"[│╭╮╰╯─]", " ", ln).strip()
        if ln and ln != "Error" and not ln.startswith(_NOISE):
            lines.append(ln)
    errors = [ln for ln in lines if "error" in ln.lower()]
    last = (errors or lines or [""])[-1]
    head = f"exit {proc.rc}"
    return f"{head}: {last[:400]}" if last else head


_NOISE = ("INFO ", "WARNING ", "DEBUG ", "Usage:", "Try '")


def tail(text: str, n: int = TAIL_CHARS) -> str:
    """The last ``n`` characters of ``text``."""
    return text if len(text) <= n else "…" + text[-n:]


# --------------------------------------------------------------------------------------
# the time budget
# --------------------------------------------------------------------------------------


class Budget:
    """The run's time budget, shared out over the steps.

    A step may run until ``t0 + budget × (its share and the earlier steps')``, so
    time an earlier step leaves flows on, but not so long that the later steps'
    reserve (:data:`STEP_MIN_S`, scaled down for small budgets) and the report's no
    longer fit. The first step (the environment, which decides the device) keeps
    nothing back for the others.
    """

    def __init__(self, seconds: float, steps: Sequence[str], t0: float) -> None:
        self.seconds = seconds
        self.t0 = t0
        self.end = t0 + seconds
        self.steps = list(steps)
        total = sum(SHARES[s] for s in self.steps) or 1.0
        self.share = {s: SHARES[s] / total for s in self.steps}
        self.reserve = {s: min(STEP_MIN_S[s], self.share[s] * seconds) for s in steps}
        self.deadline = self.end

    def remaining(self, now: float | None = None) -> float:
        """Seconds left of the whole budget."""
        return self.end - (time.time() if now is None else now)

    def open_step(self, step: str, now: float | None = None) -> float:
        """Start ``step``: its deadline (epoch seconds), also kept in ``deadline``."""
        now = time.time() if now is None else now
        i = self.steps.index(step)
        cum = sum(self.share[s] for s in self.steps[: i + 1])
        later = sum(self.reserve[s] for s in self.steps[i + 1 :]) if i else 0.0
        planned = max(self.t0 + self.seconds * cum, now + STEP_FLOOR_S.get(step, 0.0))
        self.deadline = min(planned, self.end - END_RESERVE_S - later)
        return self.deadline

    def limit(self, cap: float, now: float | None = None) -> float:
        """Seconds one command of the open step may run: ``cap``, within the step."""
        now = time.time() if now is None else now
        return min(cap, self.deadline - now)


# --------------------------------------------------------------------------------------
# the record of every command
# --------------------------------------------------------------------------------------


@dataclass
class Check:
    """One command of the run and how it went."""

    step: str
    name: str
    status: str = "pending"  # ok | failed | timeout | skipped
    reason: str | None = None
    seconds: float | None = None
    limit_s: float | None = None
    command: list[str] | None = None
    rc: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""


@dataclass
class Run:
    """Everything the steps share: options, places, budget, results."""

    args: argparse.Namespace
    device: str
    out: Path
    work: Path
    budget: Budget
    env: dict[str, str]
    data: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    @property
    def gpu(self) -> bool:
        """Whether this is the GPU flow."""
        return self.device.startswith("cuda")

    def record(self, check: Check) -> Check:
        """Keep ``check``, print one line about it, rewrite the report."""
        self.checks.append(check)
        took = "" if check.seconds is None else f" ({check.seconds:.1f} s)"
        why = f": {check.reason}" if check.reason else ""
        used = time.time() - self.budget.t0
        print(
            f"[{used:6.0f} s] {check.step}: {check.name}: {check.status}{took}{why}",
            flush=True,
        )
        write_report(self)
        return check

    def skip(self, step: str, name: str, reason: str) -> Check:
        """Record a command that was not run, and why."""
        return self.record(Check(step, name, "skipped", reason))

    def run(
        self,
        step: str,
        name: str,
        cmd: Sequence[str],
        cap: float,
        validate: Callable[[str], str | None] | None = None,
        ok_rc: tuple[int, ...] = (0,),
        cwd: Path | None = None,
    ) -> tuple[Check, Proc | None]:
        """Run one command of ``step`` within its cap and the budget; record it.

        ``validate(stdout)`` of a command that succeeded (an exit code in ``ok_rc``)
        returns why its output is not what was expected (then the command counts as
        failed), or None. Commands run in the work folder unless ``cwd`` is given
        (from the repository root, ``python -m alosmap`` would import the source
        folder ``alosmap/`` over an installed alosmap).
        """
        if self.budget.remaining() <= END_RESERVE_S + MIN_CHECK_S:
            return self.skip(step, name, "time budget used up"), None
        limit = self.budget.limit(cap)
        if limit < MIN_CHECK_S:
            why = f"time budget of the {step} step used up"
            return self.skip(step, name, why), None
        cmd = list(cmd)
        if any(_matches(name, pat) for pat in self.fail):
            cmd = [sys.executable, "-c", _FORCED_FAILURE]
        proc = run_command(cmd, limit, env=self.env, cwd=cwd or self.work)
        check = Check(
            step,
            name,
            command=[str(c) for c in cmd],
            rc=proc.rc,
            seconds=round(proc.seconds, 2),
            limit_s=round(limit, 1),
            stdout_tail=tail(proc.stdout),
            stderr_tail=tail(proc.stderr),
        )
        if proc.timed_out:
            check.status, check.reason = "timeout", f"killed at its {limit:.0f} s limit"
        elif proc.rc not in ok_rc:
            check.status, check.reason = "failed", failure_reason(proc)
        else:
            check.status = "ok"
            why = validate(proc.stdout) if validate else None
            if why:
                check.status, check.reason = "failed", why
        return self.record(check), proc


_FORCED_FAILURE = (
    "import sys; print('alosmap: error: forced failure (--fail-check)', "
    "file=sys.stderr); sys.exit(3)"
)


def _matches(name: str, pattern: str) -> bool:
    """``--fail-check`` patterns: a glob against the check's name."""
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def alosmap(*args: object) -> list[str]:
    """The command line of ``alosmap ARGS…`` with this Python."""
    return [sys.executable, "-m", "alosmap", *map(str, args)]


def _json_problem(stdout: str) -> str | None:
    """Why ``stdout`` holds no JSON document (None if it does)."""
    try:
        parse_json(stdout)
    except ValueError as exc:
        return str(exc)
    return None


def parse_json(text: str) -> Any:
    """The JSON document a command printed (the last one, after any noise)."""
    text = text.strip()
    with contextlib.suppress(ValueError):
        return json.loads(text)
    starts = [m.start() for m in re.finditer(r"^\{", text, re.M)]
    for s in reversed(starts):
        with contextlib.suppress(ValueError):
            return json.loads(text[s:])
    raise ValueError("no JSON document in the output")


# --------------------------------------------------------------------------------------
# step 1: environment
# --------------------------------------------------------------------------------------

_ENV_CODE = r"""
import json, platform, sys
out = {"python": sys.version.split()[0], "platform": platform.platform()}
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = bool(torch.cuda.is_available())
    cudnn = torch.backends.cudnn
    out["cudnn"] = cudnn.version() if cudnn.is_available() else None
    if out["cuda_available"]:
        p = torch.cuda.get_device_properties(0)
        out["gpu"] = {
            "name": p.name, "capability": f"{p.major}.{p.minor}",
            "memory_mb": int(p.total_memory // 2**20),
            "count": torch.cuda.device_count(),
            "bf16": bool(torch.cuda.is_bf16_supported()),
        }
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import importlib.metadata as md
    import onnxruntime as ort
    dists = md.packages_distributions().get("onnxruntime", [])
    out["onnxruntime"] = ort.__version__
    out["onnxruntime_dists"] = sorted(set(dists))
    out["ort_providers"] = list(ort.get_available_providers())
except Exception as e:
    out["onnxruntime_error"] = f"{type(e).__name__}: {e}"
try:
    import tensorrt
    out["tensorrt"] = tensorrt.__version__
except Exception as e:
    out["tensorrt_error"] = f"{type(e).__name__}: {e}"
try:
    import alosmap
    out["alosmap"] = alosmap.__version__
except Exception as e:
    out["alosmap_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""

_SMI_QUERY = "name,driver_version,memory.total,compute_cap"


def step_environment(run: Run) -> None:
    """Versions and devices: the Python libraries, nvidia-smi, ``alosmap info``."""
    env: dict[str, Any] = {}
    run.data["environment"] = env
    cmd = [sys.executable, "-c", _ENV_CODE]
    check, proc = run.run("environment", "versions", cmd, 120, _json_problem)
    if proc is not None and check.status == "ok":
        env.update(parse_json(proc.stdout))
    if shutil.which("nvidia-smi") is None:
        run.skip("environment", "nvidia-smi", "nvidia-smi not found (no NVIDIA driver)")
    else:
        q = ["nvidia-smi", f"--query-gpu={_SMI_QUERY}", "--format=csv,noheader"]
        check, proc = run.run("environment", "nvidia-smi", q, 30)
        if proc is not None and check.status == "ok":
            env["nvidia_smi"] = [
                dict(
                    zip(
                        _SMI_QUERY.split(","),
                        [v.strip() for v in ln.split(",")],
                        strict=False,
                    )
                )
                for ln in proc.stdout.strip().splitlines()
                if ln.strip()
            ]
    check, proc = run.run("environment", "alosmap info", alosmap("info"), 120)
    if proc is not None:
        env["alosmap_info"] = proc.stdout.strip()


def choose_device(run_env: dict[str, Any], args: argparse.Namespace) -> str | None:
    """The device of the run, or None (then the caller exits 2, see ``no_gpu_line``)."""
    if args.device == "cpu":
        return "cpu"
    if run_env.get("cuda_available"):
        return args.device
    return "cpu" if args.allow_cpu else None


def no_gpu_line(env: dict[str, Any]) -> str:
    """The one line printed (exit 2) when there is no usable CUDA GPU."""
    if "torch_error" in env:
        why = f"torch does not import ({env['torch_error']})"
    elif "cuda_available" in env:
        why = f"torch {env.get('torch')} sees no CUDA device"
    else:
        why = "the environment check did not finish"
    return (
        f"gpu_check: no usable CUDA GPU: {why}; run it on a machine with an NVIDIA "
        "GPU, or add --allow-cpu for the CPU flow"
    )


# --------------------------------------------------------------------------------------
# step 2: model files
# --------------------------------------------------------------------------------------

_PARITY_RE = re.compile(
    r"max \|Δprob\| = (?P<max>\S+) \(tolerance (?P<tol>\S+)\), argmax agreement = "
    r"(?P<agree>[\d.]+) % on (?P<source>.+)$",
    re.M,
)
_BUILT_RE = re.compile(r"(?:exported|built) in (?P<s>[\d.]+) s")


def parse_export(stderr: str) -> dict[str, Any]:
    """The parity and timing lines that ``alosmap export`` prints on stderr."""
    out: dict[str, Any] = {}
    m = _PARITY_RE.search(stderr)
    if m:
        out["parity"] = {
            "max_abs_dprob": float(m["max"]),
            "tolerance": float(m["tol"]),
            "argmax_pct": float(m["agree"]),
            "source": m["source"].strip(),
        }
    m = _BUILT_RE.search(stderr)
    if m:
        out["seconds"] = float(m["s"])
    info = [ln for ln in stderr.splitlines() if re.search(r"MiB, (exported|built)", ln)]
    if info:
        out["summary"] = info[-1].strip()
    return out


def model_path(run: Run, preset: str, kind: str) -> Path:
    """A model file in the work folder: safetensors, onnx, fp32 or fp16 (engines)."""
    name = {"safetensors": ".safetensors", "onnx": ".onnx"}.get(kind, f"_{kind}.engine")
    return run.work / f"{preset}{name}"


def _have(run: Run, preset: str, kind: str) -> bool:
    return run.data["models"].get(preset, {}).get(kind, {}).get("status") == "ok"


def _why_missing(run: Run, preset: str, kind: str) -> str:
    """Why a model file of ``preset`` is not there (for skip reasons)."""
    rec = run.data["models"].get(preset, {}).get(kind)
    what = {"safetensors": "the model", "onnx": "the ONNX export"}.get(
        kind, f"the {kind} engine"
    )
    if not rec:
        return f"needs {what}, which was not made"
    return f"needs {what}: {rec.get('status')} ({rec.get('reason') or '-'})"


def step_models(run: Run) -> None:
    """Random-weight models of each preset, their ONNX export and TensorRT engines."""
    for preset in run.args.presets:
        rec: dict[str, Any] = {}
        run.data["models"][preset] = rec
        path = model_path(run, preset, "safetensors")
        name = f"{preset}: random model"
        cmd = alosmap("train", "init", "-o", path, "--preset", preset, "--overwrite")
        check, _ = run.run("models", name, cmd, 300)
        rec["safetensors"] = _file_record(check, path)
        _export_onnx(run, preset, rec)
        for precision in ("fp16", "fp32"):  # fp16 first: the one predict uses
            _build_engine(run, preset, precision, rec)


def _file_record(check: Check, path: Path, **extra: Any) -> dict[str, Any]:
    """A model file's record: status (ok only if the file is there), size, figures."""
    ok = check.status == "ok" and path.exists()
    status = "ok" if ok else ("failed" if check.status == "ok" else check.status)
    return {
        "status": status,
        "reason": check.reason if check.status != "ok" else (None if ok else "no file"),
        "path": str(path),
        "mb": round(path.stat().st_size / 2**20, 2) if ok else None,
        **extra,
    }


def _export_onnx(run: Run, preset: str, rec: dict[str, Any]) -> None:
    name = f"{preset}: ONNX fp32 export"
    if not _have(run, preset, "safetensors"):
        run.skip("models", name, _why_missing(run, preset, "safetensors"))
        return
    path = model_path(run, preset, "onnx")
    cmd = alosmap(
        "export", "onnx", model_path(run, preset, "safetensors"), "-o", path,
        "--overwrite",
    )  # fmt: skip
    rec["onnx"] = _export(run, name, cmd, path, 900, DEFAULT_TOLERANCE["onnx"])


#: ``alosmap export``'s default parity tolerances (its --help), for the verdict.
DEFAULT_TOLERANCE = {"onnx": 1e-3, "fp32": 1e-2, "fp16": 2e-2}


def _export(
    run: Run, name: str, cmd: list[str], path: Path, cap: float, tolerance: float
) -> dict[str, Any]:
    """Run an export with the parity measured but never fatal; retry without the
    real scene if the export failed with it.

    ``--tolerance 1`` lets every export through (random weights may differ more in
    fp16 than the default allows, and the speed figures need the file); the
    measured parity is recorded with its verdict against the default tolerance.
    """
    scene = run.data["real_scene"]["path"]
    parity = ["--tolerance", "1", *(["--parity-scene", scene] if scene else [])]
    check, proc = run.run("models", name, [*cmd, *parity], cap)
    if scene and check.status == "failed":
        check, proc = run.run(
            "models", f"{name} (no real scene)", [*cmd, *parity[:2]], cap
        )
    rec = _file_record(check, path, **parse_export(proc.stderr if proc else ""))
    if rec.get("parity"):
        rec["parity"]["default_tolerance"] = tolerance
        rec["parity"]["within_default"] = rec["parity"]["max_abs_dprob"] <= tolerance
    return rec


def _build_engine(run: Run, preset: str, precision: str, rec: dict[str, Any]) -> None:
    name = f"{preset}: TensorRT {precision} engine"
    if not run.gpu:
        run.skip("models", name, "TensorRT engines need a CUDA GPU (device cpu)")
        return
    if not _have(run, preset, "onnx"):
        run.skip("models", name, _why_missing(run, preset, "onnx"))
        return
    path = model_path(run, preset, precision)
    sizes = [*run.args.batch_sizes, run.args.e2e_batch]
    cmd = alosmap(
        "export", "tensorrt", model_path(run, preset, "onnx"), "-o", path,
        "--max-batch", min(64, max(sizes)), "--opt-batch", min(64, run.args.e2e_batch),
        "--device", run.device, "--overwrite",
        *(["--fp16"] if precision == "fp16" else []),
    )  # fmt: skip
    cap = 1500 if preset == "paper" else 900
    rec[precision] = _export(run, name, cmd, path, cap, DEFAULT_TOLERANCE[precision])


# --------------------------------------------------------------------------------------
# step 3: model-only benchmark
# --------------------------------------------------------------------------------------


def step_bench(run: Run) -> None:
    """``alosmap bench --json`` per preset, one call per group of variants."""
    for preset in run.args.presets:
        variants: dict[str, Any] = {label: {} for label in run.args.variants}
        res: dict[str, Any] = {"variants": variants, "reference": None, "machine": None}
        run.data["bench"][preset] = res
        groups: dict[str, list[str]] = {}
        for label in run.args.variants:
            vdef = VARIANTS[label]
            reason = _variant_blocker(run, preset, label, vdef)
            if reason:
                res["variants"][label] = {"variant": label, "skipped": reason}
                run.skip("bench", f"{preset}: {label}", reason)
            else:
                groups.setdefault(vdef.group, []).append(label)
        for group, labels in groups.items():
            _bench_group(run, preset, group, labels, res)


def _variant_blocker(run: Run, preset: str, label: str, vdef: VariantDef) -> str | None:
    """Why ``label`` cannot run (device cpu, a missing model file), or None."""
    if vdef.gpu_only and not run.gpu:
        return f"GPU only (device cpu): {vdef.cpu_reason}"
    if not _have(run, preset, "safetensors"):
        return _why_missing(run, preset, "safetensors")
    if vdef.needs and not _have(run, preset, vdef.needs):
        return _why_missing(run, preset, vdef.needs)
    return None


def _bench_group(
    run: Run, preset: str, group: str, labels: list[str], res: dict[str, Any]
) -> None:
    """One ``alosmap bench`` call for ``labels``; their results into ``res``."""
    a = run.args
    backends = ",".join(VARIANTS[label].backends for label in labels)
    cmd = alosmap(
        "bench", "-m", model_path(run, preset, "safetensors"),
        "--backends", backends,
        "--batch-sizes", ",".join(map(str, a.batch_sizes)),
        "-b", a.e2e_batch, "--batches", a.batches, "--size", 0,
        "--agree-tiles", a.agree_tiles, "--device", run.device, "--json",
        *(["--threads", a.threads] if a.threads else []),
    )  # fmt: skip
    if any(VARIANTS[label].needs == "onnx" for label in labels):
        cmd += ["--onnx", str(model_path(run, preset, "onnx"))]
    engine = next(
        (VARIANTS[lb].needs for lb in labels if lb.startswith("tensorrt")), None
    )
    if engine:
        cmd += ["--engine", str(model_path(run, preset, engine))]
    cap = 1800 if preset == "paper" else 900
    name = f"{preset}: {','.join(labels)}"
    check, proc = run.run("bench", name, cmd, cap, _bench_problem)
    report: dict[str, Any] = {}
    if proc is not None and check.rc == 0:
        with contextlib.suppress(ValueError):
            report = parse_json(proc.stdout)
    if not report:
        for label in labels:
            res["variants"][label] = {"variant": label, "error": check.reason}
        return
    res["machine"] = report.get("machine")
    res["reference"] = res["reference"] or report.get("reference")
    res.setdefault("notes", []).extend(report.get("notes", []))
    by_backends = {v["variant"]: v for v in report.get("variants", [])}
    for label in labels:
        v = by_backends.get(VARIANTS[label].backends)
        if v is None:
            v = {"error": "missing from the bench report"}
        res["variants"][label] = {**v, "variant": label}


def _bench_problem(stdout: str) -> str | None:
    """The variants ``alosmap bench`` reports as failed (its JSON), or None."""
    try:
        report = parse_json(stdout)
    except ValueError as exc:
        return f"bench printed no JSON: {exc}"
    failed = [
        f"{v.get('variant')}: {v.get('error')}"
        for v in report.get("variants", [])
        if v.get("error")
    ]
    return "; ".join(failed) or None


def model_only(run: Run, preset: str, label: str, batch: int) -> float | None:
    """Model-only tiles/s of a bench variant at ``batch`` (None if not measured)."""
    v = run.data["bench"].get(preset, {}).get("variants", {}).get(label) or {}
    for row in v.get("rows") or []:
        if row.get("batch_size") == batch:
            return float(row["tiles_per_s"])
    return None


# --------------------------------------------------------------------------------------
# step 4: the pipeline ceiling
# --------------------------------------------------------------------------------------


def step_ceiling(run: Run) -> None:
    """``alosmap bench --ceiling --json`` on CUDA (GPU flow) and on the CPU.

    Each device twice: the map alone, and with ``--confidence --probabilities``;
    at the batch size of the end-to-end step.
    """
    devices = [run.device, "cpu"] if run.gpu else ["cuda", "cpu"]
    extras = {
        "": [],
        " +confidence +probabilities": ["--confidence", "--probabilities"],
    }
    for device in devices:
        for suffix, flags in extras.items():
            key = f"{device}{suffix}"
            if device.startswith("cuda") and not run.gpu:
                run.skip("ceiling", f"ceiling {key}", "GPU only (device cpu)")
                run.data["ceiling"][key] = {"skipped": "GPU only (device cpu)"}
                continue
            cmd = alosmap(
                "bench", "--ceiling", "--device", device,
                "--size", run.args.ceiling_size, "-b", run.args.e2e_batch,
                *flags, "--json",
            )  # fmt: skip
            check, proc = run.run(
                "ceiling", f"ceiling {key}", cmd, 600, _ceiling_problem
            )
            if proc is None or check.status != "ok":
                run.data["ceiling"][key] = {"error": check.reason}
            else:
                run.data["ceiling"][key] = parse_json(proc.stdout)["ceiling"]


def _ceiling_problem(stdout: str) -> str | None:
    """Why ``stdout`` is not ``{"ceiling": {...}}`` (None if it is)."""
    try:
        found = parse_json(stdout)
    except ValueError as exc:
        return f"no ceiling JSON: {exc}"
    if not isinstance(found, dict) or not isinstance(found.get("ceiling"), dict):
        return 'no "ceiling" object in the JSON'
    return None


# --------------------------------------------------------------------------------------
# step 5: end to end
# --------------------------------------------------------------------------------------

_SCENE_CODE = (
    "import sys; from pathlib import Path; "
    "from alosmap.predict.bench import write_bench_scene; "
    "write_bench_scene(Path(sys.argv[1]), int(sys.argv[2]))"
)
_AGREE_CODE = r"""
import json, sys
import numpy as np, rasterio
ref, others = sys.argv[1], sys.argv[2:]
out = []
for path in others:
    valid = agree = nd_diff = 0
    with rasterio.open(ref) as a, rasterio.open(path) as b:
        if (a.width, a.height) != (b.width, b.height):
            out.append({"map": path, "error": "sizes differ"}); continue
        for _, w in a.block_windows(1):
            x, y = a.read(1, window=w), b.read(1, window=w)
            vx, vy = x != a.nodata, y != b.nodata
            nd_diff += int((vx != vy).sum())
            both = vx & vy
            valid += int(both.sum()); agree += int((x[both] == y[both]).sum())
    out.append({"map": path, "valid_pixels": valid, "nodata_mismatch": nd_diff,
                "agreement_pct": 100.0 * agree / valid if valid else None})
print(json.dumps(out))
"""
_SUMMARY_RE = re.compile(
    r"(?P<run>\d+)/(?P<total>\d+) tiles in (?P<s>[\d.]+) s \((?P<tps>[\d.]+) tiles/s\)"
)
_PROVIDER_RE = re.compile(r"(\w+)ExecutionProvider")


def e2e_defs(run: Run) -> dict[str, E2EDef]:
    """The end-to-end backends of this flow."""
    return E2E_GPU if run.gpu else E2E_CPU


def e2e_preset(run: Run) -> str:
    """The preset mapped end to end: the largest of the run (paper if there)."""
    return max(run.args.presets, key=lambda p: (*PRESET_ORDER, p).index(p))


def step_e2e(run: Run) -> None:
    """``alosmap predict`` per backend on a generated scene and on the real tile."""
    preset = e2e_preset(run)
    size = run.args.scene_size
    scene = run.work / f"scene_{size}.tif"
    cmd = [sys.executable, "-c", _SCENE_CODE, str(scene), str(size)]
    check, _ = run.run("e2e", f"generated {size}² scene", cmd, 600)
    scene_ok = check.status == "ok"
    run.data["e2e"]["scene"] = {"size": size, "preset": preset, "ok": scene_ok}
    rows = run.data["e2e"]["rows"]
    for label, edef in e2e_defs(run).items():
        blocker = _e2e_blocker(run, preset, edef) or (
            None if scene_ok else f"no scene ({check.reason})"
        )
        name = f"predict {size}²: {preset} {label}"
        if blocker:
            rows.append({"backend": label, "preset": preset, "skipped": blocker})
            run.skip("e2e", name, blocker)
            continue
        rows.append(_predict_row(run, preset, label, edef, scene, name))
    _real_scene(run, preset)


def _e2e_blocker(run: Run, preset: str, edef: E2EDef) -> str | None:
    if edef.gpu_only and not run.gpu:
        return f"GPU only (device cpu): {edef.cpu_reason}"
    if not _have(run, preset, edef.model):
        return _why_missing(run, preset, edef.model)
    return None


def _predict_cmd(
    run: Run, preset: str, edef: E2EDef, scene: Path | str, output: Path
) -> list[str]:
    a = run.args
    return alosmap(
        "-v", "predict", scene, "-m", model_path(run, preset, edef.model),
        "-o", output, "--overwrite", "-b", a.e2e_batch, "--device", run.device,
        *(["--precision", edef.precision] if edef.precision else []),
        *(["--threads", a.threads] if a.threads else []),
    )  # fmt: skip


def _predict_row(
    run: Run, preset: str, label: str, edef: E2EDef, scene: Path, name: str
) -> dict[str, Any]:
    """Map ``scene`` with one backend; wall time, tiles/s and e2e ÷ model-only."""
    out = run.work / f"e2e_{preset}_{label}.tif"
    cmd = _predict_cmd(run, preset, edef, scene, out)
    check, proc = run.run("e2e", name, cmd, 1200)
    row: dict[str, Any] = {
        "backend": label,
        "preset": preset,
        "batch_size": run.args.e2e_batch,
    }
    if proc is None or check.status != "ok":
        row["error"] = check.reason
        return row
    row["wall_s"] = round(proc.seconds, 2)
    m = _SUMMARY_RE.search(proc.stderr)
    providers = _PROVIDER_RE.findall(proc.stderr)
    row["runs_on"] = f"{providers[0]} EP" if providers else run.device
    if m is None:
        row["note"] = "predict's summary line was not found (tiles/s unknown)"
        return row
    tiles, seconds = int(m["run"]), float(m["s"])
    row.update(tiles_run=tiles, tiles_total=int(m["total"]), seconds=seconds)
    row["tiles_per_s"] = float(m["tps"])
    row["wall_tiles_per_s"] = tiles / proc.seconds if proc.seconds else None
    ref = _model_only_label(run, label, row["runs_on"])
    mo = model_only(run, preset, ref, run.args.e2e_batch)
    row["model_only_variant"], row["model_only_tiles_per_s"] = ref, mo
    if mo:
        row["e2e_over_model"] = row["tiles_per_s"] / mo
        row["wall_over_model"] = row["wall_tiles_per_s"] / mo
    return row


def _model_only_label(run: Run, label: str, runs_on: str) -> str:
    """The bench variant that measured ``label``'s model alone."""
    if label == "onnx" and run.gpu:
        return "onnx-trt" if runs_on == "Tensorrt EP" else "onnx-cuda"
    return label


def _real_scene(run: Run, preset: str) -> None:
    """Map the real ALOS-2 tile with torch fp32 and each backend; compare the maps."""
    real = run.data["real_scene"]
    scene = real["path"]
    real["preset"] = preset
    if not scene:
        run.skip("e2e", "real scene", real["note"])
        return
    maps: dict[str, str] = {}
    ref = E2EDef("safetensors", "fp32")
    backends = {"torch-fp32": ref, **e2e_defs(run)}
    for label, edef in backends.items():
        if label != "torch-fp32" and (edef.model, edef.precision or "fp32") == (
            ref.model,
            ref.precision,
        ):
            continue  # torch fp32 on the CPU flow: the reference itself
        name = f"predict real scene: {preset} {label}"
        blocker = _e2e_blocker(run, preset, edef)
        if blocker:
            run.skip("e2e", name, blocker)
            continue
        out = run.work / f"real_{preset}_{label}.tif"
        check, _ = run.run(
            "e2e", name, _predict_cmd(run, preset, edef, scene, out), 600
        )
        if check.status == "ok":
            maps[label] = str(out)
    ref_map = maps.pop("torch-fp32", None)
    if ref_map is None or not maps:
        real["agreement"] = []
        return
    cmd = [sys.executable, "-c", _AGREE_CODE, ref_map, *maps.values()]
    name = "real scene: maps vs torch fp32"
    check, proc = run.run("e2e", name, cmd, 300, _json_problem)
    if proc is not None and check.status == "ok":
        found = parse_json(proc.stdout)
        labels = {path: label for label, path in maps.items()}
        real["agreement"] = [{"backend": labels[r["map"]], **r} for r in found]


def find_real_scene(given: str | None) -> tuple[str | None, str]:
    """The real ALOS-2 HH tile: ``--real-scene``, else the first known place."""
    if given:
        p = Path(given)
        return (str(p), f"given: {p}") if p.exists() else (None, f"{p} not found")
    for d in REAL_SCENE_DIRS:
        if (d / REAL_SCENE_NAME).exists():
            return str(d / REAL_SCENE_NAME), f"found in {d}"
    return None, (
        f"the real ALOS-2 tile {REAL_SCENE_NAME} was not found (looked in "
        + ", ".join(str(d) for d in REAL_SCENE_DIRS)
        + "); --real-scene FILE names it"
    )


# --------------------------------------------------------------------------------------
# step 6: pytest -m gpu
# --------------------------------------------------------------------------------------

_PYTEST_SUMMARY = re.compile(r"^=*\s*(.*\bin [\d.]+s.*?)\s*=*$")


def step_pytest(run: Run) -> None:
    """``pytest -m gpu`` (tests that skip themselves without a GPU or TensorRT).

    Only the test files that hold ``gpu`` tests are collected (unless
    ``--pytest-args`` names others): faster, and a module that needs a package the
    machine lacks (``rio_cogeo`` on a lent machine) cannot break the step.
    """
    paths = run.args.pytest_args.split() or gpu_test_files()
    cmd = [
        sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs",
        "-p", "no:cacheprovider", "--continue-on-collection-errors", *paths,
    ]  # fmt: skip
    check, proc = run.run("pytest", "pytest -m gpu", cmd, 1200, ok_rc=(0, 5), cwd=REPO)
    res: dict[str, Any] = {"command": "python " + " ".join(cmd[1:])}
    run.data["pytest"] = res
    if proc is None:
        res["summary"] = check.reason
        return
    lines = proc.stdout.strip().splitlines()
    summary = [m[1] for ln in lines if (m := _PYTEST_SUMMARY.match(ln.strip()))]
    res["summary"] = summary[-1] if summary else (lines[-1] if lines else check.reason)
    res["skipped"] = [ln for ln in lines if ln.startswith("SKIPPED")]
    res["rc"] = proc.rc
    if proc.rc == 5:  # no test collected: not a failure of the run
        check.reason = "no gpu test collected"


def gpu_test_files(root: Path = REPO / "tests") -> list[str]:
    """The test files (relative to the repository) that mark tests ``gpu``."""
    found = [
        str(path.relative_to(REPO))
        for path in sorted(root.rglob("test_*.py"))
        if re.search(r"\bmark\.gpu\b", path.read_text(encoding="utf-8"))
    ]
    return found


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------


def write_report(run: Run) -> None:
    """Write ``gpu_report.json`` and ``gpu_report.md`` (atomically) into ``--out``."""
    data = report_data(run)
    _write(run.out / "gpu_report.json", json.dumps(data, indent=2, default=str))
    _write(run.out / "gpu_report.md", markdown(data))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def report_data(run: Run) -> dict[str, Any]:
    """The JSON report: settings, every command's record, and the results."""
    a = run.args
    counts = {s: sum(c.status == s for c in run.checks) for s in _STATUSES}
    return {
        "schema": SCHEMA,
        "started": run.data["started"],
        "updated": _now(),
        "seconds": round(time.time() - run.budget.t0, 1),
        "budget_s": run.budget.seconds,
        "mode": "quick" if a.quick else "full",
        "device": run.device,
        "allow_cpu": a.allow_cpu,
        "command": run.data["command"],
        "settings": {
            "presets": a.presets,
            "variants": a.variants,
            "batch_sizes": a.batch_sizes,
            "batches": a.batches,
            "e2e_batch": a.e2e_batch,
            "scene_size": a.scene_size,
            "ceiling_size": a.ceiling_size,
            "threads": a.threads,
            "steps": run.budget.steps,
        },
        "counts": counts,
        "notes": run.data["notes"],
        "environment": run.data.get("environment", {}),
        "real_scene": run.data["real_scene"],
        "models": run.data["models"],
        "bench": run.data["bench"],
        "ceiling": run.data["ceiling"],
        "e2e": run.data["e2e"],
        "pytest": run.data.get("pytest"),
        "checks": [asdict(c) for c in run.checks],
    }


_STATUSES = ("ok", "failed", "timeout", "skipped")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _f(value: Any, spec: str = ".1f", missing: str = "–") -> str:
    """``value`` formatted, ``missing`` when absent."""
    if value is None or value == "":
        return missing
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table (cells escaped for ``|``)."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def markdown(d: dict[str, Any]) -> str:
    """The markdown report (tables) of :func:`report_data`'s dict."""
    parts: list[str] = []
    for section in (
        _md_head,
        _md_targets,
        _md_environment,
        _md_checks,
        _md_models,
        _md_bench,
        _md_ceiling,
        _md_e2e,
        _md_real,
        _md_pytest,
    ):
        parts += section(d)
    return "\n".join(parts).rstrip() + "\n"


def _md_head(d: dict[str, Any]) -> list[str]:
    env = d["environment"]
    gpu = (env.get("gpu") or {}).get("name") or "no CUDA GPU"
    c = d["counts"]
    lines = [
        "# alosmap GPU check",
        "",
        f"- started {d['started']}, updated {d['updated']}, {d['seconds']:.0f} s of a "
        f"{d['budget_s']:.0f} s budget ({d['mode']} mode)",
        f"- device **{d['device']}** ({gpu}); commands: {c['ok']} ok, {c['failed']} "
        f"failed, {c['timeout']} timed out, {c['skipped']} skipped",
        f"- command: `{' '.join(d['command'])}`",
    ]
    lines += [f"- note: {n}" for n in d["notes"]]
    return [*lines, ""]


#: The issue's GPU targets: pipeline ceiling on the GPU, and paper TensorRT fp16
#: end to end over model only on a 6000² scene.
TARGET_CEILING_TPS = 3000.0
TARGET_E2E_RATIO = 0.9


def _md_targets(d: dict[str, Any]) -> list[str]:
    """The headline figures against the targets, and the fastest model-only rows."""
    lines = ["## Headline", ""]
    c = d["ceiling"].get(d["device"]) or {}
    if d["device"].startswith("cuda") and c.get("tiles_per_s"):
        verdict = "met" if c["tiles_per_s"] >= TARGET_CEILING_TPS else "not met"
        lines.append(
            f"- pipeline ceiling on {d['device']}: {c['tiles_per_s']:.0f} tiles/s at "
            f"{c.get('size')}² (target ≥ {TARGET_CEILING_TPS:.0f}: {verdict})"
        )
    for r in d["e2e"].get("rows", []):
        ratio = r.get("e2e_over_model")
        if ratio is None:
            continue
        goal = ""
        if r["backend"] == "tensorrt-fp16" and r["preset"] == "paper":
            met = "met" if ratio >= TARGET_E2E_RATIO else "not met"
            goal = f" (target ≥ {TARGET_E2E_RATIO} at 6000²: {met})"
        lines.append(
            f"- e2e ÷ model-only, {r['preset']} {r['backend']}, "
            f"{d['e2e']['scene'].get('size')}² scene: {ratio:.2f}{goal}"
        )
    for preset, res in d["bench"].items():
        best = max(
            (
                (row["tiles_per_s"], label, row["batch_size"])
                for label, v in res["variants"].items()
                for row in v.get("rows") or []
            ),
            default=None,
        )
        if best:
            lines.append(
                f"- fastest model-only, {preset}: {best[1]} at batch {best[2]}, "
                f"{best[0]:.1f} tiles/s"
            )
    return [*lines, ""] if len(lines) > 2 else []


def _md_environment(d: dict[str, Any]) -> list[str]:
    env = d["environment"]
    gpu = env.get("gpu") or {}
    smi = (env.get("nvidia_smi") or [{}])[0]
    cudnn = _cudnn(env.get("cudnn"))
    gpu_line = (
        f"{gpu['name']} (compute capability {gpu.get('capability')}, "
        f"{_f(gpu.get('memory_mb'), 'd')} MiB, {gpu.get('count')} device(s))"
        if gpu
        else "none visible to torch"
    )
    rows = [
        ("GPU", gpu_line),
        ("driver (nvidia-smi)", smi.get("driver_version", "–")),
        ("Python", env.get("python", "–")),
        (
            "torch",
            f"{env.get('torch', env.get('torch_error', '–'))}, CUDA "
            f"{env.get('torch_cuda') or '–'}, cuDNN {cudnn or '–'}",
        ),
        (
            "ONNX Runtime",
            f"{env.get('onnxruntime', env.get('onnxruntime_error', '–'))}"
            f" ({', '.join(env.get('onnxruntime_dists') or []) or '?'})",
        ),
        ("ORT providers", ", ".join(env.get("ort_providers") or []) or "–"),
        ("TensorRT", env.get("tensorrt") or env.get("tensorrt_error", "–")),
        ("alosmap", env.get("alosmap") or env.get("alosmap_error", "–")),
    ]
    lines = ["## 1. Environment", "", *_table(("what", "version"), rows)]
    if env.get("alosmap_info"):
        lines += ["`alosmap info`:", "", "```", env["alosmap_info"], "```", ""]
    return lines


def _cudnn(v: Any) -> str | None:
    """cuDNN's version number as text (``92400`` → ``9.24.0``, ``8902`` → ``8.9.2``)."""
    if not isinstance(v, int):
        return None
    major, rest = (v // 10000, v % 10000) if v >= 90000 else (v // 1000, v % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _md_checks(d: dict[str, Any]) -> list[str]:
    rows = [
        (
            c["step"],
            c["name"],
            c["status"],
            _f(c["seconds"]),
            _f(c["limit_s"], ".0f"),
            c["reason"] or "",
        )
        for c in d["checks"]
    ]
    head = ("step", "command", "status", "s", "limit s", "reason")
    return ["## Commands run", "", *_table(head, rows)]


def _md_models(d: dict[str, Any]) -> list[str]:
    rows = []
    for preset, rec in d["models"].items():
        for kind in ("safetensors", "onnx", "fp32", "fp16"):
            r = rec.get(kind)
            if not r:
                continue
            p = r.get("parity") or {}
            parity = (
                f"{p['argmax_pct']:.3f} % / {p['max_abs_dprob']:.1e} on {p['source']}"
                if p
                else "–"
            )
            what = {"fp32": "TensorRT fp32", "fp16": "TensorRT fp16"}.get(kind, kind)
            rows.append(
                (
                    preset,
                    what,
                    r["status"],
                    _f(r.get("mb"), ".1f"),
                    _f(r.get("seconds")),
                    parity,
                )
            )
    head = (
        "preset",
        "file",
        "status",
        "MiB",
        "export/build s",
        "parity argmax / max|Δp|",
    )
    note = (
        "Parity as `alosmap export` checks it: ONNX against PyTorch (CPU), engines "
        "against ONNX Runtime (CPU), on tiles of the real ALOS-2 tile when found."
    )
    return ["## 2. Model files (random weights)", "", note, "", *_table(head, rows)]


def _md_bench(d: dict[str, Any]) -> list[str]:
    sizes = d["settings"]["batch_sizes"]
    lines = [
        "## 3. Model only (`alosmap bench`)",
        "",
        "tiles/s at each batch size; memory = peak device MB on a GPU, peak RSS MB on "
        "the CPU; agreement with torch fp32 on bench's real-format tiles (cut from its "
        "generated DN scene as predict reads them; bench takes no scene of its own, "
        "so the real tile is compared in section 5).",
        "",
    ]
    for preset, res in d["bench"].items():
        rows = []
        for label, v in res["variants"].items():
            rows.append(_bench_row(label, v, sizes, res.get("reference")))
        head = (
            "variant",
            "runs on",
            *[f"b{b}" for b in sizes],
            "peak MB",
            "argmax %",
            "max abs Δp",
            "note",
        )
        lines += [f"### {preset}", "", *_table(head, rows)]
        if res.get("machine"):
            lines += [f"machine: {res['machine']}", ""]
    return lines


def _bench_row(
    label: str, v: dict[str, Any], sizes: Sequence[int], ref: str | None
) -> list[Any]:
    blank = ["–"] * len(sizes)
    if v.get("skipped") or v.get("error"):
        why = v.get("skipped") or v.get("error")
        return [
            label,
            "–",
            *blank,
            "–",
            "–",
            "–",
            f"{'skipped' if v.get('skipped') else 'failed'}: {why}",
        ]
    tps = {r["batch_size"]: r["tiles_per_s"] for r in v.get("rows") or []}
    peak = max((r.get("peak_mb") or 0 for r in v.get("rows") or []), default=None)
    a = v.get("agreement") or {}
    is_ref = v.get("variant") == ref or (label == "torch" and ref == "torch")
    prov = v.get("providers") or []
    runs_on = (
        prov[0].replace("ExecutionProvider", " EP") if prov else v.get("memory", "")
    )
    return [
        label + (f" ({v['precision']})" if v.get("precision") else ""),
        "gpu" if runs_on == "gpu" else ("cpu" if runs_on == "rss" else runs_on),
        *[_f(tps.get(b), ".1f") for b in sizes],
        _f(peak, ".0f"),
        "ref" if is_ref else _f(a.get("argmax_pct"), ".3f"),
        "ref" if is_ref else _f(a.get("max_abs_dprob"), ".1e"),
        "",
    ]


def _md_ceiling(d: dict[str, Any]) -> list[str]:
    rows, stages = [], {}
    for device, c in d["ceiling"].items():
        if "error" in c or "skipped" in c:
            what = "skipped" if "skipped" in c else "failed"
            rows.append(
                (device, *["–"] * 7, f"{what}: {c.get('skipped') or c.get('error')}")
            )
            continue
        rows.append(
            (
                device,
                _f(c.get("size"), "d"),
                _f(c.get("tiles"), "d"),
                _f(c.get("seconds"), ".2f"),
                _f(c.get("tiles_per_s"), ".0f"),
                _f(c.get("host_tiles_per_s"), ".0f"),
                _f(c.get("peak_rss_mb"), ".0f"),
                _f(c.get("peak_device_mb"), ".0f"),
                "",
            )
        )
        stages[device] = c.get("stages_ms_per_tile") or {}
    head = (
        "run",
        "size",
        "tiles",
        "s",
        "tiles/s",
        "host tiles/s",
        "peak RSS MB",
        "peak device MB",
        "note",
    )
    lines = ["## 4. Pipeline ceiling (`alosmap bench --ceiling`, zero-cost model)", ""]
    lines += _table(head, rows)
    if stages:
        names = list(dict.fromkeys(s for st in stages.values() for s in st))
        srows = [(s, *[_f(stages[dv].get(s), ".3f") for dv in stages]) for s in names]
        lines += ["ms per tile by stage:", ""]
        lines += _table(("stage", *stages), srows)
    return lines


def _md_e2e(d: dict[str, Any]) -> list[str]:
    s = d["e2e"].get("scene") or {}
    rows = []
    for r in d["e2e"].get("rows", []):
        if r.get("skipped") or r.get("error"):
            what = "skipped" if r.get("skipped") else "failed"
            rows.append(
                (
                    r["preset"],
                    r["backend"],
                    *["–"] * 8,
                    f"{what}: {r.get('skipped') or r.get('error')}",
                )
            )
            continue
        mo = r.get("model_only_tiles_per_s")
        rows.append(
            (
                r["preset"],
                r["backend"],
                r.get("runs_on", ""),
                f"{_f(r.get('tiles_run'), 'd')}/{_f(r.get('tiles_total'), 'd')}",
                _f(r.get("wall_s"), ".1f"),
                _f(r.get("seconds"), ".1f"),
                _f(r.get("tiles_per_s"), ".1f"),
                f"{_f(mo, '.1f')} ({r.get('model_only_variant')} b{r['batch_size']})",
                _f(r.get("e2e_over_model"), ".2f"),
                _f(r.get("wall_over_model"), ".2f"),
                r.get("note", ""),
            )
        )
    head = (
        "preset",
        "backend",
        "runs on",
        "tiles",
        "wall s",
        "predict s",
        "tiles/s",
        "model-only tiles/s",
        "e2e ÷ model",
        "wall ÷ model",
        "note",
    )
    size = s.get("size")
    return [
        f"## 5. End to end (`alosmap predict`, generated {size}×{size} scene)",
        "",
        "predict s and tiles/s: predict's own figures (reading, blending, writing, COG "
        "build; model loading excluded); wall s: the whole command, start-up included.",
        "",
        *_table(head, rows),
    ]


def _md_real(d: dict[str, Any]) -> list[str]:
    real = d["real_scene"]
    lines = ["### Real ALOS-2 tile: maps against torch fp32", ""]
    if not real.get("path"):
        return [*lines, f"Not run: {real.get('note')}", ""]
    lines += [
        f"Scene: `{real['path']}` ({real.get('preset')} preset, random weights).",
        "",
    ]
    rows = [
        (
            r["backend"],
            _f(r.get("valid_pixels"), "d"),
            _f(r.get("agreement_pct"), ".4f"),
            _f(r.get("nodata_mismatch"), "d"),
        )
        for r in real.get("agreement") or []
    ]
    head = ("backend", "valid pixels", "same class %", "no-data mismatches")
    return [*lines, *_table(head, rows)]


def _md_pytest(d: dict[str, Any]) -> list[str]:
    p = d.get("pytest") or {}
    lines = ["## 6. `pytest -m gpu`", ""]
    if not p:
        return [*lines, "Not run.", ""]
    lines += [f"`{p.get('command', '')}`: **{p.get('summary')}**", ""]
    lines += [f"- {s}" for s in p.get("skipped") or []]
    return [*lines, ""]


# --------------------------------------------------------------------------------------
# options and main
# --------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers like 1,8,64: {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected numbers >= 1: {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The options; ``--quick`` fills the defaults the user did not give."""
    p = argparse.ArgumentParser(
        prog="gpu_check.py",
        description="Measure alosmap on a CUDA GPU and write gpu_report.md/.json.",
    )
    p.add_argument("--out", type=Path, default=Path("gpu_report"), help="report folder")
    p.add_argument(
        "--work", type=Path, help="scratch folder (default: a temporary one)"
    )
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small preset, batch 1,8,32, 2000² scene, 450 s budget",
    )
    p.add_argument(
        "--budget", type=float, help="total seconds (default 5400; quick 450)"
    )
    p.add_argument(
        "--presets",
        "--preset",
        type=_names,
        help="presets (default small,paper; quick small; tiny for tests)",
    )
    p.add_argument(
        "--variants", type=_names, help="model-only variants: " + ", ".join(VARIANTS)
    )
    p.add_argument(
        "--batch-sizes", type=_int_list, help="default 1,8,16,32,64; quick 1,8,32"
    )
    p.add_argument("--batches", type=int, help="timed batches per size (10; quick 5)")
    p.add_argument("--agree-tiles", type=int, default=16, help="agreement tiles")
    p.add_argument("--e2e-batch", type=int, default=32, help="batch size of predict")
    p.add_argument(
        "--scene-size", type=int, help="generated scene side (6000; quick 2000)"
    )
    p.add_argument("--ceiling-size", type=int, default=6000, help="ceiling scene side")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (CPU flow)")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without a CUDA GPU run the CPU flow instead of exiting 2",
    )
    p.add_argument("--threads", type=int, help="CPU threads of bench and predict")
    p.add_argument("--real-scene", help="the real ALOS-2 tile (default: looked for)")
    p.add_argument("--skip", type=_names, default=[], help="steps to leave out")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments (paths)")
    p.add_argument("--note", action="append", default=[], help="a note for the report")
    p.add_argument(
        "--fail-check",
        action="append",
        default=[],
        help="testing: make the commands whose name matches this glob fail",
    )
    a = p.parse_args(argv)
    _defaults(a, p)
    return a


def _defaults(a: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    quick = a.quick
    a.budget = a.budget or (450.0 if quick else 5400.0)
    a.presets = a.presets or (["small"] if quick else ["small", "paper"])
    a.batch_sizes = a.batch_sizes or ([1, 8, 32] if quick else [1, 8, 16, 32, 64])
    a.batches = a.batches or (5 if quick else 10)
    a.scene_size = a.scene_size or (2000 if quick else 6000)
    if a.e2e_batch not in a.batch_sizes:
        a.batch_sizes = sorted({*a.batch_sizes, a.e2e_batch})
    bad = [s for s in a.skip if s not in STEPS or s == "environment"]
    if bad:
        p.error(
            f"--skip: unknown or required steps {bad}; steps: {', '.join(STEPS[1:])}"
        )
    bad = [v for v in (a.variants or []) if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; known: {', '.join(VARIANTS)}")
    if a.budget <= END_RESERVE_S + MIN_CHECK_S:
        p.error("--budget: too small")


def _start(args: argparse.Namespace, argv: Sequence[str]) -> Run:
    t0 = float(os.environ.get("GPU_CHECK_T0") or time.time())
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
        "TQDM_DISABLE": "1",
        "ALOSMAP_CACHE_DIR": str(work / "cache"),
    }
    steps = [s for s in STEPS if s not in args.skip]
    scene, note = find_real_scene(args.real_scene)
    data: dict[str, Any] = {
        "started": _now(),
        "command": [Path(sys.argv[0]).name, *argv],
        "notes": list(args.note),
        "real_scene": {"path": scene, "note": note},
        "models": {},
        "bench": {},
        "ceiling": {},
        "e2e": {"rows": []},
    }
    budget = Budget(args.budget, steps, t0)
    return Run(
        args, args.device, args.out, work, budget, env, data, fail=set(args.fail_check)
    )


_STEP_FUNCS: dict[str, Callable[[Run], None]] = {
    "models": step_models,
    "bench": step_bench,
    "ceiling": step_ceiling,
    "e2e": step_e2e,
    "pytest": step_pytest,
}


def _run_step(run: Run, step: str) -> None:
    """Run one step; a bug in this script is recorded as that step's failure."""
    try:
        _STEP_FUNCS[step](run)
    except Exception as exc:  # the other steps still run
        import traceback

        where = traceback.format_exc().strip().splitlines()
        check = Check(step, "gpu_check.py itself", "failed")
        check.reason = f"{type(exc).__name__}: {exc}"
        check.stderr_tail = tail("\n".join(where))
        run.record(check)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run = _start(args, argv)
    try:
        run.budget.open_step("environment")
        step_environment(run)
        device = choose_device(run.data["environment"], args)
        if device is None:
            print(no_gpu_line(run.data["environment"]), file=sys.stderr)
            return 2
        run.device = device
        if not run.gpu:
            run.data["notes"].append("CPU flow (device cpu): GPU-only commands skipped")
        args.variants = args.variants or list(
            GPU_DEFAULT_VARIANTS if run.gpu else CPU_DEFAULT_VARIANTS
        )
        for step in run.budget.steps[1:]:
            run.budget.open_step(step)
            _run_step(run, step)
    except KeyboardInterrupt:
        run.data["notes"].append("interrupted (Ctrl-C)")
        write_report(run)
        return 130
    finally:
        if args.work is None and not args.keep_work:
            shutil.rmtree(run.work, ignore_errors=True)
    write_report(run)
    print(f"report: {run.out / 'gpu_report.md'} and {run.out / 'gpu_report.json'}")
    bad = [c for c in run.checks if c.status in ("failed", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
