"""CPU time of the vLLM server's processes during a load point: the API server (HTTP, chat template, tokenisation,
image preprocessing, detokenisation, streaming) apart from the engine core and its workers.

Per request, the API server's CPU seconds are the host cost the performance model needs (it caps the request rate
at api_server_count / seconds per request); read from the kernel's per-process accounting (psutil), so they count
only the server's own work, whatever else runs on the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

API_SERVER_MARKERS = ("vllm.entrypoints.openai.api_server", "vllm serve", "APIServer")
NOT_ENGINE_MARKERS = ("resource_tracker",)


@dataclass(frozen=True)
class CpuSample:
    api_server_s: float
    engine_s: float
    api_server_wait_s: float = 0.0  # time runnable but waiting for a CPU (other work on the machine)
    engine_wait_s: float = 0.0


def _schedstat(pid: int) -> tuple[float, float] | None:
    """(run time, run-queue wait) of every thread of `pid` in seconds, at nanosecond resolution (Linux
    /proc/<pid>/task/*/schedstat); None where the kernel does not offer it. psutil's cpu_times counts in clock ticks
    (10 ms), too coarse for the few requests of a probe. The wait is time the threads were ready to run but every
    core was busy: how much the rest of the machine slowed the server down."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        run = wait = 0
        for task in tasks.iterdir():
            fields = (task / "schedstat").read_text().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
        return run / 1e9, wait / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _cpu(proc: psutil.Process) -> tuple[float, float]:
    precise = _schedstat(proc.pid)
    if precise is not None:
        return precise
    try:
        times = proc.cpu_times()
        return float(times.user + times.system), 0.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0, 0.0


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


class ServerCpu:
    """Finds the API server under the server's process group leader and samples CPU times of it and the rest."""

    def __init__(self, leader_pid: int) -> None:
        self.leader = psutil.Process(leader_pid)

    def _split(self) -> tuple[list[psutil.Process], list[psutil.Process]]:
        try:
            procs = self.leader.children(recursive=True)
        except psutil.NoSuchProcess:
            return [], []
        api = [p for p in procs if any(m in _cmdline(p) for m in API_SERVER_MARKERS)]
        api_pids = {p.pid for p in api}
        engine = [p for p in procs if p.pid not in api_pids and not any(m in _cmdline(p) for m in NOT_ENGINE_MARKERS)]
        return api, engine

    def sample(self) -> CpuSample | None:
        api, engine = self._split()
        if not api:
            return None
        api_times = [_cpu(p) for p in api]
        engine_times = [_cpu(p) for p in engine]
        return CpuSample(sum(t[0] for t in api_times), sum(t[0] for t in engine_times),
                         sum(t[1] for t in api_times), sum(t[1] for t in engine_times))


def point_fields(before: CpuSample | None, after: CpuSample | None, completed: int, duration: float) -> dict:
    """LoadPoint fields from two samples; empty when either is missing (an external endpoint, a dead server)."""
    if before is None or after is None or duration <= 0:
        return {}
    api = max(after.api_server_s - before.api_server_s, 0.0)
    engine = max(after.engine_s - before.engine_s, 0.0)
    fields = {"api_server_cpu_util": api / duration, "engine_cpu_util": engine / duration}
    api_wait = max(after.api_server_wait_s - before.api_server_wait_s, 0.0)
    engine_wait = max(after.engine_wait_s - before.engine_wait_s, 0.0)
    if api + api_wait > 0:
        fields["api_server_cpu_wait_share"] = api_wait / (api + api_wait)
    if engine + engine_wait > 0:
        fields["engine_cpu_wait_share"] = engine_wait / (engine + engine_wait)
    if completed:
        fields["api_server_cpu_s_per_request"] = api / completed
        fields["engine_cpu_s_per_request"] = engine / completed
    return fields
