#!/usr/bin/env bash
# One-command GPU verification of alosmap (docs/gpu_check.md).
#
#   scripts/gpu_check.sh [--wheels DIR | --no-install] [--python PY] [gpu_check.py options]
#   scripts/gpu_check.sh --fetch-wheels DIR      # on a machine with pip access: bundle
#
# On a machine with an NVIDIA GPU: installs alosmap with its GPU extras
# (pip install -e '.[gpu,tensorrt]'; --wheels DIR installs offline from DIR;
# --no-install uses what is there), then runs scripts/gpu_check.py, which measures
# everything and writes gpu_report.md and gpu_report.json (--out DIR, default
# ./gpu_report). Options it does not know are passed on to gpu_check.py (--quick,
# --budget S, --out DIR, --presets, --allow-cpu, ...; see `gpu_check.py --help`).
#
# Without an NVIDIA GPU it exits 2 with one line, unless --allow-cpu (the CPU flow,
# used by the tests). --fetch-wheels DIR downloads, for the lent GPU machines of
# this workplace (Python 3.12, x86-64, no network), the wheels alosmap needs that
# their image lacks, and copies the real ALOS-2 test tile there when it is found.
#
# Exit codes: those of gpu_check.py (0 all ran commands passed, 1 some failed,
# 2 no GPU or usage error, 130 interrupted); 1 when alosmap cannot be imported.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
GPU_CHECK_T0=$(date +%s.%N)
export GPU_CHECK_T0
install=online
wheels=""
fetch=""
allow_cpu=0
pass=()
notes=()

say() { echo "gpu_check: $*" >&2; }

usage() {
  sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

need_value() {
  if [ "$2" -lt 2 ]; then
    say "$1 needs a value"
    exit 2
  fi
}

while [ $# -gt 0 ]; do
  case $1 in
    --wheels) need_value "$1" $#; install=wheels; wheels=$2; shift 2 ;;
    --wheels=*) install=wheels; wheels=${1#*=}; shift ;;
    --no-install) install=none; shift ;;
    --python) need_value "$1" $#; PY=$2; shift 2 ;;
    --python=*) PY=${1#*=}; shift ;;
    --fetch-wheels) need_value "$1" $#; fetch=$2; shift 2 ;;
    --fetch-wheels=*) fetch=${1#*=}; shift ;;
    --allow-cpu) allow_cpu=1; pass+=("$1"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

# ---- --fetch-wheels: the offline bundle for a lent machine -------------------------
# The lent machines' image has torch, onnx, onnxruntime (CPU build), timm, typer,
# tqdm, safetensors, scipy, pytest and hypothesis, but not these.
BUNDLE=(rasterio shapely affine cligj click-plugins)
REAL_TILE=N23W161_20_sl_HH_F02DAR.tif

fetch_wheels() {
  local dir=$1 spec specs=() v
  mkdir -p "$dir" || exit 1
  for name in "${BUNDLE[@]}"; do  # the versions installed here, when they are
    v=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)
    spec=$name${v:+==$v}
    specs+=("$spec")
  done
  say "downloading ${specs[*]} for CPython 3.12 x86-64 into $dir"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dir" "${specs[@]}" || exit 1
  local tile
  for d in "$ROOT/../shared/data/alos2_mosaic_N23W161_2020" \
           "$ROOT/shared/data/alos2_mosaic_N23W161_2020"; do
    if [ -f "$d/$REAL_TILE" ]; then tile=$d/$REAL_TILE; break; fi
  done
  if [ -n "${tile:-}" ]; then
    install -m 0644 "$tile" "$dir/" && say "copied the real ALOS-2 tile $REAL_TILE into $dir"
  else
    say "the real ALOS-2 tile $REAL_TILE was not found: the report will say so"
  fi
  du -sh "$dir" >&2
}

if [ -n "$fetch" ]; then
  fetch_wheels "$fetch"
  exit 0
fi

# ---- is there an NVIDIA GPU? -------------------------------------------------------
has_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

if ! has_gpu; then
  if [ "$allow_cpu" = 0 ]; then
    say "no NVIDIA GPU found (nvidia-smi is missing or lists none): this check needs" \
        "a CUDA GPU; --allow-cpu runs the CPU flow"
    exit 2
  fi
  if [ "$install" = online ]; then  # the GPU extras are of no use here
    say "no NVIDIA GPU: installing nothing (CPU flow with what is installed)"
    install=none
  fi
fi
if [ -n "$wheels" ] && [ -d "$wheels" ]; then
  wheels=$(cd "$wheels" && pwd)  # absolute: gpu_check.py runs its commands elsewhere
fi

# ---- installing --------------------------------------------------------------------
pip_quiet() {  # pip with its output kept to a log; the log's tail on failure
  local log
  log=$(mktemp)
  if "$PY" -m pip "$@" >"$log" 2>&1; then
    rm -f "$log"
    return 0
  fi
  { grep -E '^ERROR|error:' "$log" || tail -n 3 "$log"; } | tail -n 3 | sed 's/^/  pip: /' >&2
  rm -f "$log"
  return 1
}

one_onnxruntime() {  # onnxruntime-gpu is about to come in: the CPU package must go
  if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ] \
     && "$PY" -m pip show onnxruntime >/dev/null 2>&1; then
    say "removing the CPU-only onnxruntime package: onnxruntime-gpu replaces it" \
        "(both own the module onnxruntime)"
    pip_quiet uninstall -y onnxruntime || true
  fi
}

install_online() {
  one_onnxruntime
  say "pip install -e '.[gpu,tensorrt]'"
  if ! pip_quiet install -q -e "${ROOT}[gpu,tensorrt]"; then
    say "pip install -e '.[gpu,tensorrt]' failed; going on with what is installed"
    notes+=(--note "install: pip install -e '.[gpu,tensorrt]' failed; ran with what was installed")
  fi
}

install_wheels() {
  local dir=$1
  if [ ! -d "$dir" ]; then
    say "--wheels $dir: no such folder"
    exit 2
  fi
  if ls "$dir"/onnxruntime_gpu-*.whl >/dev/null 2>&1; then one_onnxruntime; fi
  say "offline install from $dir"
  if pip_quiet install -q --no-index --no-build-isolation --find-links "$dir" \
       -e "${ROOT}[gpu,tensorrt]"; then
    return 0
  fi
  # Not every requirement has a wheel in DIR (onnxruntime-gpu and TensorRT are too
  # big to carry to a lent machine): install the wheels there are and alosmap
  # itself without dependency resolution; the report shows what is missing.
  say "some requirements have no wheel in $dir: installing its wheels and alosmap" \
      "without dependency resolution"
  local whl=("$dir"/*.whl)
  if [ -e "${whl[0]}" ]; then
    pip_quiet install -q --no-index --no-deps "${whl[@]}" \
      || say "installing the wheels of $dir failed"
  fi
  if ! pip_quiet install -q --no-index --no-deps --no-build-isolation -e "$ROOT"; then
    say "editable install failed; trying a regular install"
    pip_quiet install -q --no-index --no-deps --no-build-isolation "$ROOT" \
      || say "installing alosmap failed"
  fi
  notes+=(--note "install: offline from $dir without dependency resolution (missing wheels)")
}

case $install in
  online) install_online ;;
  wheels) install_wheels "$wheels" ;;
  none) ;;
esac

if ! "$PY" -c "import alosmap" >/dev/null 2>&1; then
  say "alosmap does not import with $PY: install it (pip install -e '.[gpu,tensorrt]')" \
      "or name the Python with --python"
  exit 1
fi

# the real ALOS-2 tile travels in the wheels folder to a lent machine
real=()
if [ -n "$wheels" ] && [ -f "$wheels/$REAL_TILE" ]; then
  case " ${pass[*]:-} " in
    *" --real-scene"*) ;;
    *) real=(--real-scene "$wheels/$REAL_TILE") ;;
  esac
fi

exec "$PY" "$ROOT/scripts/gpu_check.py" ${pass[@]+"${pass[@]}"} \
  ${notes[@]+"${notes[@]}"} ${real[@]+"${real[@]}"}
