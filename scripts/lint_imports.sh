#!/usr/bin/env bash
# Check the import contracts in pyproject.toml ([tool.importlinter]) with import-linter.
#
# alosmap.train and alosmap.export live in train/ and export/ (a setuptools package-dir
# mapping), which import-linter cannot follow through the editable install. So a copy of
# the sources is installed (not editable, no dependencies) into a temporary folder and
# the contracts are checked against that, from a neutral working directory. The copy
# keeps stale files of an earlier build (build/) out of the check.
#
# Usage: scripts/lint_imports.sh [VENV]   (default: .venv)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(cd "${1:-$repo/.venv}" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

mkdir "$tmp/src"
cp -R "$repo/pyproject.toml" "$repo/README.md" "$repo/alosmap" "$repo/train" \
    "$repo/export" "$tmp/src/"
# the build's own warnings (setuptools deprecations) are shown only if it fails
if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation --target "$tmp/site" "$tmp/src" >"$tmp/pip.log" 2>&1; then
    cat "$tmp/pip.log" >&2
    exit 1
fi
cd "$tmp"
PYTHONPATH="$tmp/site" "$venv/bin/lint-imports" --no-cache --no-logo \
    "$repo/pyproject.toml"
