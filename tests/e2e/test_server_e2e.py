"""The real vLLM server (serve env) on the tiny VLM: answers image+text, reports early death, leaves no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vlmopt.bench.server import ServerStartError, VllmServer, group_alive
from vlmopt.schemas import ServerArgs

from .chat import png_data_url, stream_chat

TEXT = {"type": "text", "text": "what is in the image"}


def test_streamed_chat_counts_image_tokens(tiny_server, tiny_model_dir: Path) -> None:
    text_only = stream_chat(tiny_server.base_url, tiny_server.model_name, [TEXT])
    with_image = stream_chat(
        tiny_server.base_url,
        tiny_server.model_name,
        [{"type": "image_url", "image_url": {"url": png_data_url()}}, TEXT],
    )
    for result in (text_only, with_image):
        assert result["done"], "stream did not end with [DONE]"
        assert len(result["chunks"]) >= 2, "expected a streamed response in several chunks"
        assert result["usage"]["completion_tokens"] == 8
    image_tokens = json.loads((tiny_model_dir / "vlmopt_tiny.json").read_text())["image_tokens"]
    extra = with_image["usage"]["prompt_tokens"] - text_only["usage"]["prompt_tokens"]
    # The image placeholder expands to one token per patch (16 for 56x56 / 14); the template adds a newline.
    assert extra >= image_tokens, (text_only["usage"], with_image["usage"])


def test_broken_model_fails_fast_with_log_tail(tmp_path: Path, serve_python: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"')
    started = time.monotonic()
    with pytest.raises(ServerStartError) as excinfo:
        VllmServer(ServerArgs(model=str(broken)), log_dir=tmp_path, startup_timeout_s=600, python=serve_python).start()
    elapsed = time.monotonic() - started
    message = str(excinfo.value)
    assert elapsed < 300, f"took {elapsed:.0f} s: early death was not noticed before the timeout"
    assert "exited with code" in message
    assert "Last lines of" in message and len(message.splitlines()) > 3, message
    assert str(broken) in message


def test_exception_inside_context_leaves_no_process(tiny_model_dir: Path, serve_python: Path, tmp_path: Path) -> None:
    server = VllmServer(ServerArgs(model=str(tiny_model_dir), max_num_seqs=4), log_dir=tmp_path, python=serve_python)
    pgid = None
    with pytest.raises(RuntimeError, match="boom"), server:
        pgid = server.pgid
        assert server.healthy()
        raise RuntimeError("boom")
    assert pgid is not None
    assert not group_alive(pgid), "vLLM processes survived an exception inside the context"
    assert not server.healthy(timeout_s=1)


_MANAGER = textwrap.dedent(
    """
    import signal, sys, time
    # Ctrl-C as at a terminal, even where this test runs as a background job (which starts with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from vlmopt.bench.server import VllmServer
    from vlmopt.schemas import ServerArgs
    server = VllmServer(ServerArgs(model=sys.argv[1], max_num_seqs=4), log_dir=sys.argv[2], python=sys.argv[3],
                        health_poll_s=0.5)
    wait_healthy = sys.argv[4] == "healthy"
    if wait_healthy:
        with server:
            print("PGID", server.pgid, server.args.port, flush=True)
            time.sleep(3600)
    else:
        import threading
        def report():
            while server.pgid is None:
                time.sleep(0.1)
            print("PGID", server.pgid, server.args.port, flush=True)
        threading.Thread(target=report, daemon=True).start()
        with server:
            time.sleep(3600)
    """
)


def _start_manager(tiny_model_dir: Path, serve_python: Path, log_dir: Path, mode: str) -> tuple[subprocess.Popen, int]:
    manager = subprocess.Popen(
        [sys.executable, "-c", _MANAGER, str(tiny_model_dir), str(log_dir), str(serve_python), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert manager.stdout is not None
    line = manager.stdout.readline()
    assert line.startswith("PGID"), f"manager did not report its server: {line!r}"
    return manager, int(line.split()[1])


def _wait_gone(pgid: int, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.5)
    return False


def _group_size(pgid: int) -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[2]) == pgid:
            count += 1
    return count


def test_sigkill_of_manager_leaves_no_process(tiny_model_dir: Path, serve_python: Path, tmp_path: Path) -> None:
    manager, pgid = _start_manager(tiny_model_dir, serve_python, tmp_path, "healthy")
    try:
        assert _group_size(pgid) >= 3, "expected guard, API server and engine core in the server's group"
        manager.kill()  # SIGKILL: no Python cleanup runs in the manager
        manager.wait(timeout=10)
        assert _wait_gone(pgid), f"vLLM process group {pgid} outlived its SIGKILLed manager"
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_ctrl_c_during_startup_leaves_no_process(tiny_model_dir: Path, serve_python: Path, tmp_path: Path) -> None:
    manager, pgid = _start_manager(tiny_model_dir, serve_python, tmp_path, "starting")
    try:
        deadline = time.monotonic() + 120
        while _group_size(pgid) < 3 and time.monotonic() < deadline:  # wait until vLLM spawned its engine
            time.sleep(0.5)
        assert _group_size(pgid) >= 2
        manager.send_signal(signal.SIGINT)
        manager.wait(timeout=60)
        assert _wait_gone(pgid, timeout_s=30), f"vLLM process group {pgid} outlived Ctrl-C"
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        if manager.poll() is None:
            manager.kill()
