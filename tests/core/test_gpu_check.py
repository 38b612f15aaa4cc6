"""scripts/gpu_check.py and .sh: step runner, time budget, failure records, report.

The GPU flow itself needs a GPU; here it runs with a fake command runner (every
command line it builds is also checked against the real CLI's options), and the
CPU flow (``--allow-cpu --device cpu``) runs for real with the tiny preset.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"
SHELL = REPO / "scripts" / "gpu_check.sh"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


# --------------------------------------------------------------------------------------
# the pieces
# --------------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return state == "Z"  # a zombie left to init is dead too


def test_run_command_kills_the_whole_process_group_at_its_limit(tmp_path):
    pidfile = tmp_path / "pid"
    cmd = ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo started; wait"]
    # 5 s: time for sh to start and echo even on a loaded machine; the sleep needs 60
    proc = gpu_check.run_command(cmd, 5.0)
    assert proc.timed_out and proc.rc is not None  # killed at its limit, not waited
    assert "started" in proc.stdout
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 60  # SIGKILL is sent; wait for it to be delivered
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid), "the grandchild outlived its command"


def test_run_command_output_and_exit_code():
    cmd = [sys.executable, "-c", "import sys; print('out'); sys.exit(4)"]
    proc = gpu_check.run_command(cmd, 30)
    assert (proc.rc, proc.stdout.strip(), proc.timed_out) == (4, "out", False)


def test_failure_reason_picks_the_error_line():
    typer_box = (
        "Usage: python -m alosmap bench [OPTIONS]\n"
        "Try 'python -m alosmap bench -h' for help.\n"
        "╭─ Error ─────────────╮\n│ No such option: --ceiling │\n╰────────╯\n"
    )
    assert gpu_check.failure_reason(gpu_check.Proc(2, "", typer_box, 0.1, False)) == (
        "exit 2: No such option: --ceiling"
    )
    err = "INFO x: loading\nalosmap: error: TensorRT is not installed\n"
    assert gpu_check.failure_reason(gpu_check.Proc(1, "", err, 0.1, False)).endswith(
        "alosmap: error: TensorRT is not installed"
    )
    assert gpu_check.failure_reason(gpu_check.Proc(1, "", "", 0.1, False)) == "exit 1"


def test_budget_shares_flow_on_and_keep_later_steps_reserve():
    b = gpu_check.Budget(100.0, gpu_check.STEPS, t0=0.0)
    # the environment keeps nothing back for the others
    assert b.open_step("environment", now=0.0) == pytest.approx(90.0)
    # models: its share and the environment's (34 s), within the reserve of later
    # steps (bench 20 + ceiling 6 + e2e 16 + pytest 12) and the report's 3 s
    assert b.open_step("models", now=5.0) == pytest.approx(34.0)
    assert b.limit(1000.0, now=5.0) == pytest.approx(29.0)
    assert b.limit(10.0, now=5.0) == pytest.approx(10.0)
    # a step that starts late gets nothing the later steps need
    assert b.open_step("bench", now=80.0) == pytest.approx(100 - 3 - 34)
    assert b.limit(100.0, now=80.0) < 0
    # the last step may use what is left
    assert b.open_step("pytest", now=50.0) == pytest.approx(97.0)
    # a skipped step's share goes to the others
    b = gpu_check.Budget(100.0, [s for s in gpu_check.STEPS if s != "pytest"], t0=0.0)
    assert sum(b.share.values()) == pytest.approx(1.0)


def test_parsers_of_command_output():
    err = (
        "parity: max |Δprob| = 8.12e-09 (tolerance 1.0e+00), argmax agreement = "
        "100.000 % on 12 tiles from N23W161_20_sl_HH_F02DAR.tif\n"
        "fp32 ONNX, opset 18, 2.6 MiB, exported in 7.9 s\n"
    )
    out = gpu_check.parse_export(err)
    assert out["parity"]["max_abs_dprob"] == pytest.approx(8.12e-9)
    assert out["parity"]["argmax_pct"] == 100.0
    assert out["parity"]["source"].endswith("N23W161_20_sl_HH_F02DAR.tif")
    assert out["seconds"] == 7.9
    assert gpu_check.parse_json('noise\n{"a": 1}\n') == {"a": 1}
    with pytest.raises(ValueError):
        gpu_check.parse_json("no json here")
    assert gpu_check._cudnn(92400) == "9.24.0" and gpu_check._cudnn(8902) == "8.9.2"


# --------------------------------------------------------------------------------------
# the GPU flow, with a fake command runner
# --------------------------------------------------------------------------------------

FAKE_ENV = {
    "python": "3.12.3",
    "torch": "2.11.0+cu130",
    "torch_cuda": "13.0",
    "cuda_available": True,
    "cudnn": 91300,
    "gpu": {
        "name": "NVIDIA H100 80GB HBM3",
        "capability": "9.0",
        "memory_mb": 81008,
        "count": 1,
        "bf16": True,
    },
    "onnxruntime": "1.23.0",
    "onnxruntime_dists": ["onnxruntime-gpu"],
    "ort_providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    "tensorrt": "10.13.0",
    "alosmap": "0.1.0",
}
FAKE_CEILING = {
    "device": "cuda",
    "size": 6000,
    "classes": 9,
    "batch_size": 32,
    "overlap": 64,
    "confidence": False,
    "probabilities": False,
    "tiles": 961,
    "seconds": 0.2,
    "tiles_per_s": 4805.0,
    "host_tiles_per_s": 9000.0,
    "stages_ms_per_tile": {"read": 0.05, "blend": 0.02, "cog": 0.03},
    "peak_rss_mb": 900.0,
    "peak_device_mb": 700.0,
}


def _opt(args, name):
    return args[args.index(name) + 1]


def _touch(path):
    Path(path).write_bytes(b"fake")


def _fake_bench(args):
    if "--ceiling" in args:
        return json.dumps(
            {"ceiling": {**FAKE_CEILING, "device": _opt(args, "--device")}}
        )
    sizes = [int(b) for b in _opt(args, "--batch-sizes").split(",")]
    variants = []
    for name in _opt(args, "--backends").split(","):
        rows = [
            {
                "batch_size": b,
                "tiles_per_s": 100.0 * b,
                "ms_per_tile": 10.0 / b,
                "warmup_s": 1.0,
                "peak_mb": 500.0 + b,
            }
            for b in sizes
        ]
        error = "no CUDA EP here" if name == "onnx-cuda" else None
        variants.append(
            {"variant": name, "backend": name.split("-")[0], "precision": "fp32",
             "providers": [], "threads": 16, "load_s": 1.0, "first_batch_s": 1.0,
             "memory": "gpu", "rows": [] if error else rows,
             "agreement": None if name == "torch" else
             {"argmax_pct": 99.9, "max_abs_dprob": 1e-3},
             "e2e": None, "error": error}
        )  # fmt: skip
    return json.dumps(
        {"reference": "torch", "variants": variants, "notes": [], "machine": "fake"}
    )


def _fake_alosmap(args):
    """Output of ``alosmap ARGS`` as the GPU flow expects it: (stdout, stderr)."""
    if args[0] == "-v":
        args = args[1:]
    if args[0] == "info":
        return "torch  fake", ""
    if args[0] == "bench":
        return _fake_bench(args), ""
    _touch(_opt(args, "-o"))
    parity = (
        "parity: max |Δprob| = 2.0e-03 (tolerance 1.0e+00), argmax agreement = "
        "99.950 % on 12 tiles from N23W161_20_sl_HH_F02DAR.tif\n"
    )
    if args[:2] == ["export", "onnx"]:
        return "", parity + "fp32 ONNX, opset 18, 13.0 MiB, exported in 20.0 s\n"
    if args[:2] == ["export", "tensorrt"]:
        p = "fp16" if "--fp16" in args else "fp32"
        _touch(str(_opt(args, "-o")) + ".json")
        return "", parity + (
            f"TensorRT 10.13.0 {p} engine for NVIDIA H100 80GB HBM3 (batch 1..32), "
            "30.0 MiB, built in 60.0 s\n"
        )
    if args[0] == "predict":
        ep = ""
        if _opt(args, "-m").endswith(".onnx"):
            ep = "INFO x: ONNX Runtime 1.23.0: TensorrtExecutionProvider, CUDA...\n"
        return "", ep + "map.tif: 961/961 tiles in 2.0 s (480.50 tiles/s); Water 1%\n"
    return "", ""  # train init


def _fake_runner(calls):
    def run_command(cmd, limit_s, *, env=None, cwd=None):
        cmd = [str(c) for c in cmd]
        calls.append((cmd, limit_s))
        out, err = "", ""
        if cmd[0] == "nvidia-smi":
            out = "NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB, 9.0\n"
        elif cmd[1] == "-c" and cmd[2] == gpu_check._ENV_CODE:
            out = json.dumps(FAKE_ENV)
        elif cmd[1] == "-c" and cmd[2] == gpu_check._SCENE_CODE:
            _touch(cmd[3])
        elif cmd[1] == "-c" and cmd[2] == gpu_check._AGREE_CODE:
            found = [
                {
                    "map": m,
                    "valid_pixels": 1000,
                    "nodata_mismatch": 0,
                    "agreement_pct": 99.5,
                }
                for m in cmd[4:]
            ]
            out = json.dumps(found)
        elif cmd[1:3] == ["-m", "pytest"]:
            out = "....\n4 passed, 2 deselected in 1.23s\n"
        elif cmd[1:3] == ["-m", "alosmap"]:
            out, err = _fake_alosmap(cmd[3:])
        return gpu_check.Proc(0, out, err, 0.01, False)

    return run_command


def test_gpu_flow_with_fake_commands(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(gpu_check, "run_command", _fake_runner(calls))
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name: f"/usr/bin/{name}")
    real = tmp_path / "real.tif"
    _touch(real)
    out = tmp_path / "report"
    argv = ["--quick", "--out", str(out), "--work", str(tmp_path / "work"),
            "--real-scene", str(real)]  # fmt: skip
    rc = gpu_check.main(argv)
    # onnx-cuda's error (in bench's JSON) fails its bench command
    assert rc == 1
    assert str(out / "gpu_report.md") in capsys.readouterr().out
    d = json.loads((out / "gpu_report.json").read_text())
    assert d["device"] == "cuda" and d["mode"] == "quick"
    failed = [c for c in d["checks"] if c["status"] != "ok"]
    assert [c["name"] for c in failed] == [
        "small: torch,torch-bf16,torch-fp16,onnx-cuda"
    ]
    assert "onnx-cuda: no CUDA EP here" in failed[0]["reason"]
    # every model file, both engines; parity against the real scene, never fatal
    small = d["models"]["small"]
    assert {k: v["status"] for k, v in small.items()} == dict.fromkeys(
        ["safetensors", "onnx", "fp16", "fp32"], "ok"
    )
    assert small["fp16"]["parity"]["within_default"] is True
    engine_cmds = [c for c, _ in calls if "tensorrt" in c and "export" in c]
    assert ["--fp16" in c for c in engine_cmds] == [True, False]
    assert all("--tolerance" in c and str(real) in c for c in engine_cmds)
    # bench: one call per group, tensorrt engines by precision
    variants = d["bench"]["small"]["variants"]
    assert list(variants) == list(gpu_check.GPU_DEFAULT_VARIANTS)
    assert variants["tensorrt-fp16"]["rows"][0]["batch_size"] == 1
    assert variants["onnx-cuda"]["error"] == "no CUDA EP here"
    # ceiling on the GPU and on the CPU
    assert d["ceiling"]["cuda"]["tiles_per_s"] == 4805.0
    assert d["ceiling"]["cpu"]["device"] == "cpu"
    # end to end: e2e ÷ model-only at the same batch size (32 → 3200 tiles/s)
    rows = {r["backend"]: r for r in d["e2e"]["rows"]}
    assert rows["tensorrt-fp16"]["e2e_over_model"] == pytest.approx(480.5 / 3200)
    assert rows["onnx"]["runs_on"] == "Tensorrt EP"
    assert rows["onnx"]["model_only_variant"] == "onnx-trt"
    assert rows["torch-fp16"]["model_only_variant"] == "torch-fp16"
    assert [r["backend"] for r in d["real_scene"]["agreement"]] == list(
        gpu_check.E2E_GPU
    )
    assert d["pytest"]["summary"] == "4 passed, 2 deselected in 1.23s"
    # only the files that hold gpu tests are collected
    pytest_cmd = next(c for c, _ in calls if c[1:3] == ["-m", "pytest"])
    assert "tests/export/test_export_tensorrt.py" in pytest_cmd
    md = (out / "gpu_report.md").read_text()
    for text in ("NVIDIA H100 80GB HBM3", "tensorrt-fp16", "4805", "9.13.0"):
        assert text in md
    _check_command_lines(calls)


def _check_command_lines(calls):
    """Every ``alosmap`` command line the flow built parses with the real CLI."""
    from alosmap.cli.main import app

    runner = CliRunner()
    ceiling = "--ceiling" in runner.invoke(app, ["bench", "--help"]).output
    seen = set()
    for cmd, _ in calls:
        if cmd[1:3] != ["-m", "alosmap"]:
            continue
        args = cmd[3:]
        if "--ceiling" in args and not ceiling:
            continue  # not written yet: the run records that failure
        res = runner.invoke(app, [*args, "--help"])
        assert res.exit_code == 0, (args, res.output)
        seen.add(tuple(a for a in args if a.startswith("-") or a.isalpha())[:3])
    assert len(seen) >= 5


def test_without_gpu_the_run_stops_with_one_line(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(gpu_check, "run_command", _fake_runner(calls))
    monkeypatch.setitem(FAKE_ENV, "cuda_available", False)
    monkeypatch.delitem(FAKE_ENV, "gpu")
    rc = gpu_check.main(["--out", str(tmp_path / "r"), "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("gpu_check: no usable CUDA GPU: torch 2.11.0+cu130")
    assert all(c[0][1:3] != ["-m", "pytest"] for c in calls)


# --------------------------------------------------------------------------------------
# the shell script and the real CPU flow
# --------------------------------------------------------------------------------------


def test_shell_script_without_gpu_exits_2_with_one_line():
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi exists here: the no-GPU exit cannot be shown")
    proc = subprocess.run(
        ["bash", str(SHELL), "--quick"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no NVIDIA GPU found")
    help_ = subprocess.run(
        ["bash", str(SHELL), "--help"], capture_output=True, text=True
    )
    assert help_.returncode == 0 and "--wheels DIR" in help_.stdout


@pytest.mark.slow
def test_cpu_flow_end_to_end(tmp_path):
    out = tmp_path / "report"
    cmd = [
        "bash", str(SHELL), "--no-install", "--python", sys.executable,
        "--allow-cpu", "--device", "cpu", "--quick", "--preset", "tiny",
        "--batch-sizes", "1,2", "--e2e-batch", "2", "--batches", "1",
        "--agree-tiles", "2", "--scene-size", "512", "--ceiling-size", "512",
        "--threads", "1", "--pytest-args", "tests/core/test_classes.py",
        "--variants", "torch,onnx,onnx-trt,tensorrt-fp16",
        "--real-scene", str(tmp_path / "missing.tif"),
        "--fail-check", "predict 512²: tiny torch", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr  # the forced failure
    assert f"report: {out / 'gpu_report.md'}" in proc.stdout
    d = json.loads((out / "gpu_report.json").read_text())
    md = (out / "gpu_report.md").read_text()
    checks = {c["name"]: c for c in d["checks"]}
    assert d["device"] == "cpu" and d["seconds"] < d["budget_s"]
    # CPU figures: model only and end to end
    torch_rows = d["bench"]["tiny"]["variants"]["torch"]["rows"]
    assert [r["batch_size"] for r in torch_rows] == [1, 2]
    assert all(r["tiles_per_s"] > 0 for r in torch_rows)
    onnx = next(r for r in d["e2e"]["rows"] if r["backend"] == "onnx")
    assert onnx["tiles_run"] > 0 and onnx["e2e_over_model"] > 0
    assert "| torch (fp32) | cpu |" in md and "| tiny | onnx | CPU EP |" in md
    # GPU-only commands skipped, with their reasons
    for name in ("tiny: TensorRT fp16 engine", "tiny: onnx-trt", "ceiling cuda",
                 "predict 512²: tiny tensorrt-fp16"):  # fmt: skip
        assert checks[name]["status"] == "skipped"
        assert "GPU" in checks[name]["reason"], checks[name]
    # the forced failure is recorded and the rest went on
    forced = checks["predict 512²: tiny torch"]
    assert forced["status"] == "failed" and "forced failure" in forced["reason"]
    assert checks["predict 512²: tiny onnx"]["status"] == "ok"
    assert checks["pytest -m gpu"]["status"] == "ok"
    assert checks["ceiling cpu"]["status"] in ("ok", "failed")  # being written
    assert d["pytest"]["summary"]
    # a real scene that is not there: said so, not fatal
    assert d["real_scene"]["path"] is None
    assert checks["real scene"]["status"] == "skipped"
    assert "missing.tif not found" in checks["real scene"]["reason"]


@pytest.mark.slow
def test_the_time_budget_holds(tmp_path):
    out = tmp_path / "report"
    budget = 25
    cmd = [
        sys.executable, str(SCRIPT), "--allow-cpu", "--device", "cpu",
        "--preset", "tiny", "--threads", "1", "--budget", str(budget),
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    d = json.loads((out / "gpu_report.json").read_text())
    # the script's own clock, from its start to its report: what the budget bounds
    # (the interpreter's start-up before it, slow on a loaded machine, is not)
    assert d["budget_s"] == budget
    assert d["seconds"] < budget + 15  # kills are graceful: SIGTERM, then SIGKILL
    reasons = [c["reason"] or "" for c in d["checks"]]
    assert any("budget" in r or "limit" in r for r in reasons)
