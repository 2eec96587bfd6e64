#!/usr/bin/env bash
# The README's main command: builds whatever is missing, then runs `vlmopt demo` (extra arguments go to it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh all
exec .venv/bin/vlmopt demo "$@"
