"""What a campaign job runs: the `vlmopt benchmark` command line a user runs locally, wrapped in a short POSIX shell
step that puts vlmopt into the vLLM image, keeps a log and a status file beside the profile, and passes a stop
signal on to the benchmark so it saves what it measured (docs/benchmark.md#campaigns).

Every path the job uses comes from an environment variable of the job (`$(VAR)` in a Kubernetes container's args,
expanded by the kubelet; `${VAR}` in a SkyPilot `run:`), so the same command runs anywhere those point.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import vlmopt

# Mount points inside a job.
INPUTS_MOUNT = "/campaign/inputs"  # the campaign's manifest (a ConfigMap on Kubernetes, a file mount on SkyPilot)
RESULTS_MOUNT = "/results"  # the PVC, a folder synced to the bucket, or the bucket itself (SkyPilot)
VENV_DIR = "/tmp/vlmopt-venv"  # where vlmopt is installed when the image does not have it
# The vLLM image's own python (vllm-project/vllm docker/Dockerfile: deadsnakes python, `update-alternatives
# --install /usr/bin/python3`); vLLM is installed there with `uv pip install --system`.
IMAGE_PYTHON = "/usr/bin/python3"
PREINSTALLED = "preinstalled"

# Environment the job's command reads.
ENV_INPUTS = "VLMOPT_INPUTS_DIR"
ENV_JOB_DIR = "VLMOPT_JOB_DIR"
ENV_JOB = "VLMOPT_CAMPAIGN_JOB"  # also recorded in the profile (vlmopt.bench.runner.CAMPAIGN_JOB_ENV)
ENV_VERSION = "VLMOPT_VERSION"
ENV_INSTALL = "VLMOPT_INSTALL"
ENV_SERVE_PYTHON = "VLMOPT_SERVE_PYTHON"  # vlmopt starts vLLM with it (vlmopt.paths.serve_python)
ENV_VENV = "VLMOPT_VENV"

MANIFEST_FILE = "manifest.json"
WRAPPER_FILE = "vlmopt-job.sh"  # the job's entry step, shipped with the manifest (ConfigMap / file mount)
PROFILES_DIR = "profiles"
LOG_FILE = "job.log"
STATUS_FILE = "status.json"
EXIT_BAD_INPUT = 2  # vlmopt's exit code for bad input: retrying cannot help (the Job's podFailurePolicy)
EXIT_INTERRUPTED = 130  # vlmopt benchmark after Ctrl-C / a forwarded SIGTERM: points saved, profile incomplete

# Options the campaign sets itself for every job; giving them would break the job's layout or its resume.
OWNED_OPTIONS = {
    "--out": "each job writes to its own folder of the campaign's results",
    "--resume": "every job resumes its profile (a retried or resubmitted job continues where it stopped)",
    "--variant": "the campaign runs one job per variant (use the campaign's --variant)",
    "--devices": "each job gets one GPU or MIG slice from the scheduler",
    "--endpoint": "a job benchmarks the server it starts",
    "--model": "a job benchmarks the server it starts",
    "--device-name": "the device is read from NVML inside the job",
    "--dataset": "a dataset's files are not shipped to the jobs; use the synthetic image workload",
}


@dataclass(frozen=True)
class BenchmarkSettings:
    """The benchmark options every job passes through, as given, and what the cost estimate needs from them."""

    args: list[str]
    concurrency: list[int] = field(default_factory=lambda: [1])
    rates: list[float] = field(default_factory=list)
    sweep: bool = False
    sweep_max_concurrency: int = 64
    num_prompts: int | None = 32
    duration_s: float | None = None
    warmup: int = 2
    output_tokens: int = 32
    slo: dict[str, float] = field(default_factory=dict)
    request_timeout_s: float = 300.0
    startup_timeout_s: float = 600.0


def var(name: str) -> str:
    """A reference to a job variable, as Kubernetes expands it in `args`."""
    return f"$({name})"


def job_argv(variant: str, bench: BenchmarkSettings) -> list[str]:
    """The `vlmopt benchmark` command of one job: the user's options, plus the campaign's own (manifest, variant,
    output folder and --resume). Paths are `$(VAR)` references to the job's environment."""
    return [
        "vlmopt", "benchmark", f"{var(ENV_INPUTS)}/{MANIFEST_FILE}", "--variant", variant, *bench.args,
        "--out", f"{var(ENV_JOB_DIR)}/{PROFILES_DIR}", "--resume",
    ]


def shell_word(arg: str) -> str:
    """One argv word for a shell: `$(VAR)` references become "${VAR}", the rest is quoted."""
    out: list[str] = []
    rest = arg
    while "$(" in rest:
        head, _, tail = rest.partition("$(")
        name, _, rest = tail.partition(")")
        out.append(shlex.quote(head) if head else "")
        out.append(f'"${{{name}}}"')
    if rest or not out:
        out.append(shlex.quote(rest))
    return "".join(out)


def shell_command(argv: list[str]) -> str:
    return " ".join(shell_word(a) for a in argv)


# The job's entry step. $@ is the `vlmopt benchmark` argv. POSIX sh only (the vLLM image's /bin/sh is dash).
WRAPPER_LINES = [
    "set -u",
    f'job_dir="${ENV_JOB_DIR}"; log="$job_dir/{LOG_FILE}"; status="$job_dir/{STATUS_FILE}"',
    'mkdir -p "$job_dir"',
    "stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }",
    # status.json: written by rename, so a reader (collect) never sees half a file
    'write_status() { printf \'{"job": "%s", "state": "%s", "exit_code": %s, "started": "%s", "finished": %s, '
    '"host": "%s"}\\n\' '
    f'"${ENV_JOB}" "$1" "$2" "$started" "$3" "${{HOSTNAME:-}}" > "$status.tmp" && mv "$status.tmp" "$status"; }}',
    'started="$(stamp)"',
    "write_status running null null",
    'touch "$log"',
    # everything the job prints goes to the log file and, through tail, to the container's output
    'tail -n +1 -f "$log" & tailer=$!',
    f'echo "[vlmopt-job] ${ENV_JOB} started $started on ${{HOSTNAME:-?}}" >> "$log"',
    f'if ! vlmopt --version 2>/dev/null | grep -qx "vlmopt ${ENV_VERSION}"; then',
    f'  if [ "${ENV_INSTALL}" = {PREINSTALLED} ]; then',
    f'    echo "[vlmopt-job] the image has no vlmopt ${ENV_VERSION} on PATH" >> "$log"; rc=2',
    "  else",
    f'    echo "[vlmopt-job] installing ${ENV_INSTALL} into ${ENV_VENV} (image python ${ENV_SERVE_PYTHON})" >> "$log"',
    "    if command -v uv >/dev/null 2>&1; then",
    f'      uv venv --system-site-packages --python "${ENV_SERVE_PYTHON}" "${ENV_VENV}" >> "$log" 2>&1 &&',
    f'        uv pip install --python "${ENV_VENV}/bin/python" "${ENV_INSTALL}" >> "$log" 2>&1',
    "    else",
    f'      "${ENV_SERVE_PYTHON}" -m venv --system-site-packages "${ENV_VENV}" >> "$log" 2>&1 &&',
    f'        "${ENV_VENV}/bin/python" -m pip install -q "${ENV_INSTALL}" >> "$log" 2>&1',
    "    fi",
    "    rc=$?",
    f'    PATH="${ENV_VENV}/bin:$PATH"; export PATH',
    "  fi",
    "else",
    "  rc=0",
    "fi",
    'if [ "$rc" -eq 0 ]; then',
    '  "$@" >> "$log" 2>&1 & child=$!',
    # a stop request (spot notice, eviction, deadline) reaches vlmopt, which takes SIGTERM as Ctrl-C: it stops vLLM
    # and keeps the points it measured (a background job of a script ignores SIGINT, so TERM is what is passed on)
    "  trap 'kill -TERM \"$child\" 2>/dev/null' TERM INT",
    '  wait "$child"; rc=$?',
    '  while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done',
    "fi",
    'echo "[vlmopt-job] exit code $rc" >> "$log"',
    'write_status exited "$rc" "\\"$(stamp)\\""',
    'sleep 1; kill "$tailer" 2>/dev/null',
    'exit "$rc"',
]


def wrapper_script() -> str:
    header = ["#!/bin/sh",
              "# vlmopt campaign job: install vlmopt if the image lacks it, run the benchmark command given as",
              "# arguments, keep job.log and status.json beside the profile (docs/benchmark.md#campaigns)."]
    return "\n".join([*header, *WRAPPER_LINES]) + "\n"


def entry_command() -> list[str]:
    """How a job starts: the shipped wrapper with the benchmark argv as its arguments."""
    return ["/bin/sh", f"{INPUTS_MOUNT}/{WRAPPER_FILE}"]


def job_env(job: str, campaign: str, job_dir: str, install: str, serve_python: str) -> dict[str, str]:
    """The variables the job's command reads (paths inside the job)."""
    return {
        ENV_JOB: f"{campaign}/{job}",
        ENV_INPUTS: INPUTS_MOUNT,
        ENV_JOB_DIR: job_dir,
        ENV_VERSION: vlmopt.__version__,
        ENV_INSTALL: install,
        ENV_SERVE_PYTHON: serve_python,
        ENV_VENV: VENV_DIR,
    }


def default_install() -> str:
    """vlmopt from the package registry at the version that wrote the campaign (docs/benchmark.md#campaigns)."""
    return f"vlmopt=={vlmopt.__version__}"
