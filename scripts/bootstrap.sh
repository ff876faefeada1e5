#!/usr/bin/env bash
# Creates the virtual environment (.venv) and installs the project with its test extras.
# Reuses a torch that is already installed (a CUDA build on a GPU machine stays as it is);
# otherwise installs torch==2.13.0 (a CPU build where a local wheel exists, else PyPI's).
# Idempotent: a stamp keyed by pyproject.toml's hash skips the work on later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
[ -f "$stamp" ] && exit 0
echo ">> setting up $VENV (first run only)" >&2
if [ ! -x "$VENV/bin/python" ]; then
  if "$PY" -c 'import torch' 2>/dev/null; then
    echo ">> reusing the torch already installed for $PY" >&2
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo ">> installing $TORCH_SPEC" >&2
  "${PIP[@]}" "$TORCH_SPEC" || "${PIP[@]}" torch
fi
"${PIP[@]}" -e ".[test]"
rm -f "$VENV"/.installed-*
touch "$stamp"
