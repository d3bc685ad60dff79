#!/usr/bin/env bash
# Prints the path of a Python that has scripts/python-requirements.txt installed: $EATNAS_PYTHON
# when set (it must already have them), else the virtual environment target/python-venv, created
# with pip when missing or out of date (about 5 GB, 2 minutes on a fresh machine; kept under
# target/ so that later runs reuse it). Progress goes to stderr; stdout is the path alone.
#
#   python="$(scripts/python-env.sh)"
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$root/scripts/python-requirements.txt"
modules="import torch, numpy, safetensors, onnx, onnxruntime, PIL"
if [ -n "${EATNAS_PYTHON:-}" ]; then
  "$EATNAS_PYTHON" -c "$modules" 2>/dev/null || {
    echo "python-env: EATNAS_PYTHON=$EATNAS_PYTHON cannot import torch, numpy, safetensors, onnx, onnxruntime and PIL (pillow)" >&2
    exit 1
  }
  echo "$EATNAS_PYTHON"
  exit 0
fi
venv="$root/target/python-venv"
stamp="$venv/requirements.txt"
if ! cmp -s "$requirements" "$stamp" || ! "$venv/bin/python" -c "$modules" 2>/dev/null; then
  echo "python-env: installing $(grep -c '==' "$requirements") packages into $venv (pip, a few GB)" >&2
  python3 -m venv "$venv" >&2 || {
    echo "python-env: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
  "$venv/bin/python" -m pip install --quiet -r "$requirements" >&2
  "$venv/bin/python" -c "$modules" || {
    echo "python-env: $venv still cannot import the requirements after pip install" >&2
    exit 1
  }
  cp "$requirements" "$stamp"
fi
echo "$venv/bin/python"
