#!/usr/bin/env bash
# Install (if needed), build the embedded data, train and evaluate the tiny presets offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
exec .venv/bin/zoo quickstart "$@"
