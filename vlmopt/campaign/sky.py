"""The SkyPilot side of a campaign. SkyPilot cannot live in vlmopt's environment (it pins click 8.1), so its public
Python API is called in a subprocess of SkyPilot's own python (`sky_bridge.py`, standard library + `sky` only);
this module turns the bridge's JSON into the campaign's run states. Tests replace SkyPilot's public functions
(`sky.jobs.launch`, `sky.jobs.queue_v2`, `sky.jobs.tail_logs`, `sky.get`, `sky.client.sdk.enabled_clouds`) inside
that process, so the bridge and the task loader are the real ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from vlmopt.paths import REPO_ROOT

from .engine import EngineError, RunState

BRIDGE = Path(__file__).with_name("sky_bridge.py")
TIMEOUT_S = 900  # a launch uploads file mounts and may start the jobs controller

# ManagedJobStatus (sky/jobs/state.py) -> the campaign's run states.
_STATES: dict[str, RunState] = {
    "PENDING": "pending", "SUBMITTED": "pending", "STARTING": "pending", "RUNNING": "running",
    "WINDING_DOWN": "running", "RECOVERING": "recovering", "CANCELLING": "failed", "SUCCEEDED": "succeeded",
    "CANCELLED": "failed", "FAILED": "failed", "FAILED_SETUP": "failed", "FAILED_PRECHECKS": "failed",
    "FAILED_NO_RESOURCE": "failed", "FAILED_CONTROLLER": "failed",
}
_WHY = {
    "FAILED": "the benchmark command failed on every attempt",
    "FAILED_SETUP": "setup failed (image pull, file mounts)",
    "FAILED_PRECHECKS": "SkyPilot refused the task before launching (no cloud offers it, or credentials)",
    "FAILED_NO_RESOURCE": "no cloud had capacity for it",
    "FAILED_CONTROLLER": "SkyPilot's jobs controller failed",
    "CANCELLED": "cancelled",
}


def sky_python(explicit: str | None = None) -> Path:
    """$VLMOPT_SKY_PYTHON, else the python of the `sky` command on PATH, else <repo>/.venv-sky/bin/python."""
    candidates = [explicit, os.environ.get("VLMOPT_SKY_PYTHON")]
    sky = shutil.which("sky")
    if sky:
        try:
            first = Path(sky).read_text(errors="replace").splitlines()[0]
            if first.startswith("#!") and "python" in first:
                candidates.append(first[2:].strip().split()[0])
        except (OSError, IndexError):
            pass
    candidates += [str(REPO_ROOT / ".venv-sky" / "bin" / "python"), str(Path.cwd() / ".venv-sky" / "bin" / "python")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise EngineError("SkyPilot not found: install it (pip install skypilot, in its own environment) and set "
                      "VLMOPT_SKY_PYTHON to its python, or put `sky` on PATH")


@dataclass
class SkyJob:
    job_id: int
    state: RunState
    status: str
    started: str | None
    finished: str | None
    duration_s: float | None
    recoveries: int
    message: str


def _iso(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(float(epoch), timezone.utc).replace(microsecond=0).isoformat()


class SkyClient:
    def __init__(self, python: str | None = None) -> None:
        self.python = sky_python(python)

    def _call(self, *args: str, cwd: Path | None = None) -> dict:
        try:
            done = subprocess.run([str(self.python), str(BRIDGE), *args], cwd=cwd, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineError(f"SkyPilot ({self.python}): {exc}") from None
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        try:
            reply = json.loads(lines[-1]) if lines else {}
        except ValueError:
            reply = {}
        if "error" in reply:
            raise EngineError(f"SkyPilot: {reply['error']}")
        if done.returncode != 0 or not reply:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EngineError(f"SkyPilot ({self.python}) failed: {tail}")
        return reply

    def enabled_clouds(self) -> list[str]:
        return list(self._call("clouds")["clouds"])

    def check_access(self, clouds: set[str]) -> None:
        """Credentials for the clouds the campaign names (any one when it names none)."""
        enabled = {c.lower() for c in self.enabled_clouds()}
        if not enabled:
            raise EngineError("SkyPilot has no enabled cloud: run `sky check` and set up credentials")
        missing = sorted(c for c in clouds if c.lower() not in enabled)
        if missing:
            raise EngineError(f"SkyPilot has no credentials for {', '.join(missing)} (enabled: "
                              f"{', '.join(sorted(enabled))}); run `sky check`")

    def launch(self, task_file: Path, name: str, cwd: Path) -> tuple[int, list[str]]:
        """(managed job id, secrets the task names that were not in the environment)."""
        reply = self._call("launch", str(task_file), name, cwd=cwd)
        return int(reply["job_id"]), list(reply.get("missing_secrets") or [])

    def jobs(self, ids: list[int]) -> dict[int, SkyJob]:
        if not ids:
            return {}
        out: dict[int, SkyJob] = {}
        for record in self._call("queue", *map(str, ids))["jobs"]:
            status = str(record.get("status") or "UNKNOWN")
            state = _STATES.get(status, "unknown")
            recoveries = int(record.get("recovery_count") or 0)
            reason = record.get("failure_reason")
            message = {"pending": "waiting for the jobs controller / a cluster", "running": "running",
                       "recovering": "preempted or lost; SkyPilot is relaunching it (the profile resumes)",
                       "succeeded": "succeeded"}.get(state, _WHY.get(status, status.lower()))
            if state == "failed" and reason:
                message += f": {str(reason).splitlines()[0]}"
            if recoveries:
                message += f"; recovered {recoveries} time(s) after preemption or failure"
            out[int(record["job_id"])] = SkyJob(
                int(record["job_id"]), state, status, _iso(record.get("start_at")), _iso(record.get("end_at")),
                record.get("job_duration"), recoveries, f"{status}: {message}")
        return out

    def log_tail(self, job_id: int, lines: int) -> list[str]:
        return list(self._call("logs", str(job_id), str(lines))["lines"])
