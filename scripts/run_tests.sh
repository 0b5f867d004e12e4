#!/usr/bin/env bash
# One command from a fresh clone: install into .venv and run the test suite (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest "$@"
