"""The job's entry script (inputs/vlmopt-job.sh) under dash, the vLLM image's /bin/sh: it keeps job.log and
status.json beside the profile, passes the benchmark's exit code on (2 = bad input, which the Job does not retry),
refuses an image without vlmopt when told it has one, and passes a pod's SIGTERM on to the benchmark so it saves.
The benchmark itself is a stand-in here (its SIGTERM handling is tested in test_bench_schedule.py; the real
command runs in tests/e2e/test_campaign_e2e.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vlmopt
from vlmopt.campaign import command as cmd

DASH = shutil.which("dash") or "/bin/sh"
STAND_IN = f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "vlmopt {vlmopt.__version__}"; exit 0; fi
exec {sys.executable} -c '
import signal, sys, time, os
def stop(*_):
    open(os.environ["MARKER"], "w").write("got SIGTERM"); sys.exit(130)
signal.signal(signal.SIGTERM, stop)
print("benchmark running", sys.argv[1:], flush=True)
code = int(os.environ.get("EXIT_WITH", "0"))
if code >= 0:
    sys.exit(code)
time.sleep(60)
' "$@"
"""


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    script = tmp_path / cmd.WRAPPER_FILE
    script.write_text(cmd.wrapper_script())
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "vlmopt").write_text(STAND_IN)
    (shims / "vlmopt").chmod(0o755)
    env = {**cmd.job_env("j1", "c1", str(tmp_path / "results" / "c1" / "j1"), cmd.PREINSTALLED, sys.executable),
           "PATH": f"{shims}:/usr/bin:/bin", "MARKER": str(tmp_path / "marker"), "HOSTNAME": "pod-1"}
    return script, env


def _status(env: dict[str, str]) -> dict:
    return json.loads((Path(env[cmd.ENV_JOB_DIR]) / cmd.STATUS_FILE).read_text())


def test_script_parses_under_dash() -> None:
    subprocess.run([DASH, "-n", "-c", cmd.wrapper_script()], check=True)


@pytest.mark.parametrize("code", [0, 1, 2])
def test_exit_code_log_and_status(job, code: int) -> None:
    script, env = job
    done = subprocess.run([DASH, str(script), "vlmopt", "benchmark", "m.json"], env={**env, "EXIT_WITH": str(code)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code
    status = _status(env)
    assert (status["job"], status["state"], status["exit_code"], status["host"]) == ("c1/j1", "exited", code, "pod-1")
    assert status["started"] <= status["finished"]
    log = (Path(env[cmd.ENV_JOB_DIR]) / cmd.LOG_FILE).read_text()
    assert "benchmark running ['benchmark', 'm.json']" in log and f"[vlmopt-job] exit code {code}" in log
    assert "benchmark running" in done.stdout  # the container's output carries the log too


def test_an_image_without_vlmopt_is_bad_input(job, tmp_path: Path) -> None:
    script, env = job
    env["PATH"] = "/usr/bin:/bin"  # no vlmopt on PATH, and the campaign said the image has it
    done = subprocess.run([DASH, str(script), "vlmopt", "benchmark", "m.json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and _status(env)["exit_code"] == 2
    assert f"the image has no vlmopt {vlmopt.__version__} on PATH" in done.stdout


def test_sigterm_reaches_the_benchmark_which_saves_and_exits(job) -> None:
    script, env = job
    proc = subprocess.Popen([DASH, str(script), "vlmopt", "benchmark", "m.json"], env={**env, "EXIT_WITH": "-1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = Path(env[cmd.ENV_JOB_DIR]) / cmd.LOG_FILE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (log.is_file() and "benchmark running" in log.read_text()):
        time.sleep(0.1)
    assert _status(env)["state"] == "running"
    os.kill(proc.pid, signal.SIGTERM)  # what the kubelet sends the container's first process
    assert proc.wait(timeout=30) == 130
    assert Path(env["MARKER"]).read_text() == "got SIGTERM"
    assert _status(env)["exit_code"] == 130
