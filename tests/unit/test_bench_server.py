"""Server lifecycle pieces that need no vLLM: port choice, missing serve env, the orphan guard's mechanism."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vlmopt.bench.server import ServeEnvMissing, find_free_port, group_alive, log_tail, resolve_serve_python
from vlmopt.schemas import ServerArgs


def test_free_port_is_bindable() -> None:
    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_missing_serve_env_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ServeEnvMissing, match=r"scripts/setup\.sh serve"):
        resolve_serve_python(tmp_path / "nope" / "python")


def test_server_args_cli_is_recorded_verbatim() -> None:
    args = ServerArgs(model="/m", port=8001, max_num_seqs=4, limit_mm_per_prompt={"image": 2}, enforce_eager=True)
    cli = args.to_cli()
    assert cli[:2] == ["--model", "/m"]
    assert cli[cli.index("--limit-mm-per-prompt") + 1] == '{"image":2}'
    assert "--quantization" not in cli  # only when set
    assert "--enforce-eager" in cli


def test_log_tail_keeps_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("\n".join(f"line {i}" for i in range(100)))
    tail = log_tail(log, lines=5)
    assert tail.splitlines() == [f"line {i}" for i in range(95, 100)]


_PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    guard = subprocess.Popen([sys.executable, "-m", "vlmopt.bench._guard", str(os.getpid()), "--",
                              "bash", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    print(guard.pid, flush=True)
    time.sleep(300)
    """
)


def test_guard_ends_group_when_parent_is_sigkilled() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pgid = int(parent.stdout.readline())
    try:
        time.sleep(1.0)
        assert group_alive(pgid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_alive(pgid), "children of the guard survived their manager's SIGKILL"
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
