#!/usr/bin/env bash
# Creates the virtual environment (.venv) and installs the project into it.
#   scripts/bootstrap.sh app    what the app needs (make run): no test extras
#   scripts/bootstrap.sh test   the app plus the test extras (make test): pytest, hypothesis,
#                               the transformers/tokenizers oracles, triton for TRITON_INTERPRET
# Reuses a torch that is already installed (a CUDA build on a GPU machine stays as it is);
# otherwise installs torch==2.13.0 (a CPU build where a local wheel exists, else PyPI's).
# Idempotent: a stamp keyed by pyproject.toml's hash and the mode skips the work on later runs
# (a test install also satisfies app).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-app}
case "$MODE" in app|test) ;; *) echo "usage: $0 app|test" >&2; exit 2 ;; esac
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
hash=$(sha256sum pyproject.toml | cut -c1-16)
[ -f "$VENV/.installed-test-$hash" ] && exit 0
[ "$MODE" = app ] && [ -f "$VENV/.installed-app-$hash" ] && exit 0
echo ">> setting up $VENV for $MODE (once per change of pyproject.toml)" >&2
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
if [ "$MODE" = test ]; then "${PIP[@]}" -e ".[test]"; else "${PIP[@]}" -e .; fi
rm -f "$VENV"/.installed-*
touch "$VENV/.installed-$MODE-$hash"
