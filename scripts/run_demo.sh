#!/usr/bin/env bash
# One command from a fresh clone: install into .venv, index the sample corpus, print ranked results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
HF_HUB_OFFLINE=1 .venv/bin/python scripts/demo.py "$@"
