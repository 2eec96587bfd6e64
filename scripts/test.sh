#!/usr/bin/env bash
# The README's test command: builds whatever is missing (both envs, validators, browser), then runs every tier
# (unit, integration, e2e with the real vLLM server). Extra arguments go to pytest, e.g. `-m unit`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh all --ci-tools
exec .venv/bin/pytest -q --durations=25 "$@"
