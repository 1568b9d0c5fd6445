#!/usr/bin/env bash
# Create .venv and install encdec-zoo with everything the quickstart and the tests need (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.zoo-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: these builds run on CPU and CUDA (the pinned trio is what the project is tested with)
if ! .venv/bin/python -c "import torch, torchaudio, torchvision" 2>/dev/null; then
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0
fi
.venv/bin/python -m pip install -q -e '.[dev,data,brain]'
echo "$want" > "$stamp"
