"""`alosmap bench` in the lean install (`pip install alosmap`, no PyTorch).

PyTorch and the other extras' modules are made unimportable in every process of the
run, the bench's measurement children included, by a ``sitecustomize`` module on
``PYTHONPATH`` holding a meta-path finder that refuses them (the finder of
``tests/cli/test_core_install.py`` works in one process only: the bench measures in
children). The finder also logs each process it starts in and each import of a
refused module that was tried (a ``find_spec`` probe, which is how "is it
installed?" is asked, is not an import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "safetensors", "onnxscript", "timm", "torchvision")

SITECUSTOMIZE = textwrap.dedent(
    """
    import os, sys

    BLOCKED = {blocked!r}
    LOG = os.environ["ALOSMAP_TEST_IMPORT_LOG"]

    def _log(line):
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(f"{{os.getpid()}} {{line}}\\n")

    def _probe():
        f = sys._getframe(2)
        while f is not None:
            if (f.f_code.co_name == "find_spec"
                    and f.f_globals.get("__name__") == "importlib.util"):
                return True  # importlib.util.find_spec: asks, imports nothing
            f = f.f_back
        return False

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                if not _probe():
                    _log(f"import {{name}}")
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    _log("start")
    """
)


@dataclass
class LeanRun:
    """What ``python -m alosmap ARGS`` run without PyTorch left."""

    code: int
    stdout: str
    stderr: str
    #: the finder's log: ``PID start`` per process, ``PID import NAME`` per import
    log: list[str]

    def imports(self) -> list[str]:
        """The imports of a refused module that were tried."""
        return [ln for ln in self.log if " import " in ln]

    def processes(self) -> int:
        """How many processes ran (the command's and the bench's children)."""
        return len({ln.split()[0] for ln in self.log if ln.endswith(" start")})


def _lean_run(args: list[str], tmp: Path) -> LeanRun:
    """``python -m alosmap ARGS`` with PyTorch unimportable in all its processes."""
    site = tmp / "lean_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=BLOCKED))
    log = tmp / f"imports_{len(list(tmp.glob('imports_*.log')))}.log"
    log.write_text("")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "ALOSMAP_TEST_IMPORT_LOG": str(log),
        "ALOSMAP_ENGINE": "",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "alosmap", *args],
        capture_output=True, text=True, timeout=600, cwd=tmp, env=env,
    )  # fmt: skip
    return LeanRun(
        proc.returncode, proc.stdout, proc.stderr, log.read_text().splitlines()
    )


@pytest.fixture(scope="module")
def tiny_onnx(tiny_lulc_model, tmp_path_factory) -> Path:
    """The tiny LULC model as ONNX (exported here, with PyTorch)."""
    from alosmap.export.onnx import export_onnx
    from alosmap.spec import SPEC_KEY, load_model

    net, spec = load_model(tiny_lulc_model)
    path = tmp_path_factory.mktemp("onnx") / "tiny-lulc.onnx"
    meta = {SPEC_KEY: spec.to_json()}
    return export_onnx(net, path, metadata=meta, exporter="torchscript")


FAST = ["--batches", "1", "-b", "2", "--agree-tiles", "2", "--size", "300"]


def test_lean_bench_measures_onnx_without_importing_torch(tiny_onnx, tmp_path):
    args = ["-m", str(tiny_onnx), "--backends", "onnx", "--batch-sizes", "1,2"]
    res = _lean_run(["bench", *args, *FAST, "--json"], tmp_path)
    assert res.code == 0, res.stderr
    assert res.imports() == []  # no torch, in the parent or any child
    assert res.processes() >= 2  # the measurement child ran without torch too
    report = json.loads(res.stdout)
    assert report["model"] == "tiny-lulc.onnx" and report["notes"] == []
    assert report["reference"] == "onnx"  # no PyTorch fp32: onnx fp32 is the reference
    (v,) = report["variants"]
    assert v["variant"] == "onnx" and v["error"] is None
    assert v["providers"] == ["CPUExecutionProvider"] and v["agreement"] is None
    assert [r["batch_size"] for r in v["rows"]] == [1, 2]
    for r in v["rows"]:
        assert r["tiles_per_s"] > 0
        assert r["ms_per_tile"] == pytest.approx(1000 / r["tiles_per_s"])
    e2e = v["e2e"]
    assert e2e["size"] == 300 and e2e["tiles_run"] == e2e["tiles_total"] == 4
    assert e2e["tiles_per_s"] == pytest.approx(e2e["tiles_run"] / e2e["seconds"])


def test_lean_bench_defaults_to_the_bundled_onnx_model(tmp_path):
    res = _lean_run(["bench", *FAST], tmp_path)
    assert res.code == 0, res.stderr
    assert res.imports() == [] and res.processes() >= 2
    head, *table = res.stdout.splitlines()
    note = (
        "PyTorch is not installed: measuring the bundled lulc.onnx with onnx only "
        "(pip install 'alosmap[torch]' for the torch variants)"
    )
    assert head.startswith("model lulc.onnx · " + note) and res.stdout.count(note) == 1
    assert any(ln.split()[:1] == ["variant"] and "tiles/s" in ln for ln in table)
    rows = [ln.split() for ln in table if ln.startswith("onnx")]
    # the model-only row (variant, precision, runs on, batch, tiles/s ...), then
    # the end-to-end row (variant, tiles, seconds, tiles/s ...)
    assert rows[0][:5] == ["onnx", "(fp32)", "CPU", "EP", "2"]
    assert float(rows[0][5]) > 0 and float(rows[1][3]) > 0
    assert rows[1][1] == "4/4"


def test_lean_ceiling_stays_without_torch(tmp_path):
    res = _lean_run(["bench", "--ceiling", "--path", "host", "--size", "128"], tmp_path)
    assert res.code == 0, res.stderr
    assert res.imports() == [] and "tiles per CPU-second" in res.stdout


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--backends", "onnx,torch-bf16"], "--backends torch-bf16"),
        (["-m", str(REPO / "alosmap" / "weights" / "lulc.safetensors")],
         "--model lulc.safetensors (a .safetensors model)"),
        (["--preset", "small"],
         "--preset (a random model; pass an .onnx --model instead)"),
        (["--device", "cuda"], "--device cuda"),
        (["--backends", "tensorrt"], "--backends tensorrt"),
    ],
)  # fmt: skip
def test_lean_bench_refuses_what_needs_torch_before_any_work(args, what, tmp_path):
    res = _lean_run(["bench", *args, *FAST], tmp_path)
    assert res.code == 2
    assert res.processes() == 1  # no measurement child started: no work done
    needs = "needs PyTorch, which is not installed: pip install 'alosmap[torch]'"
    assert res.stderr.strip().splitlines() == [f"alosmap: error: {what} {needs}"]


def test_plan_with_torch_keeps_the_defaults(tiny_lulc_model):
    from alosmap.predict.bench import DEFAULT_BACKENDS, parse_variants, plan_bench

    plan = plan_bench(None, None)
    assert plan.variants == tuple(parse_variants(DEFAULT_BACKENDS))
    assert plan.model is None and plan.note is None  # a random --preset model
    plan = plan_bench("onnx", tiny_lulc_model, preset_given=True, device="cuda")
    assert [v.label for v in plan.variants] == ["onnx"]
    assert plan.model == tiny_lulc_model and plan.note is None
