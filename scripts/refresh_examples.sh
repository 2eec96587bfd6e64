#!/usr/bin/env bash
# Regenerates the two committed examples with the real tools (after scripts/setup.sh):
#   profiles/example/  a benchmark profile measured on the tiny LLaVA with the serve env's vLLM (one short run,
#                      about 3-5 minutes on a 2-core CPU, most of it the server start)
#   reports/example/   the cost report `vlmopt plan` writes for the bundled default workload (estimates, seconds)
# Usage: scripts/refresh_examples.sh [profile|report|all]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vlmopt, whatever the env has installed
WHAT="${1:-all}"
VLMOPT=(.venv/bin/python -c "from vlmopt.cli import main; main()")
SCRATCH="${TMPDIR:-/tmp}/vlmopt-example"

refresh_profile() {
  mkdir -p "$SCRATCH"
  "${VLMOPT[@]}" dev tiny-model "$SCRATCH/tiny-llava"
  # measured in place (the profile records its own paths); git has the previous example if this run fails
  rm -rf profiles/example
  # two closed-loop load points, 8 requests each: 64 text tokens + one 56x56 image (16 image tokens) in, 16 out
  "${VLMOPT[@]}" benchmark "$SCRATCH/tiny-llava" --out profiles/example --concurrency 1,2 --num-prompts 8 \
    --output-tokens 16 --slo ttft_p95_ms=3000,tpot_p95_ms=500
  ls -R profiles/example
}

refresh_report() {
  "${VLMOPT[@]}" plan --out "$SCRATCH/deploy" --report-dir reports/example
}

case "$WHAT" in
  profile) refresh_profile ;;
  report) refresh_report ;;
  all) refresh_profile; refresh_report ;;
  *) echo "usage: $0 [profile|report|all]" >&2; exit 2 ;;
esac
