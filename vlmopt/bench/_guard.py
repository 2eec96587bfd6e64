"""Process guard between vlmopt and a vLLM server: if vlmopt dies (even by SIGKILL), the server goes too.

Runs with the *main* env's interpreter (stdlib only) as the leader of a new process group; the server and every
process it spawns share that group, so one `killpg` ends them all. Usage:
    python -m vlmopt.bench._guard PARENT_PID -- CMD [ARGS...]
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
_GRACE_S = 10.0


def _ask_kernel_for_parent_death_signal() -> None:
    # Linux only; elsewhere the getppid() poll below is the fallback.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _end_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(0, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)
    os.killpg(0, signal.SIGKILL)  # takes this guard with it


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m vlmopt.bench._guard PARENT_PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    parent_pid = int(argv[0])
    _ask_kernel_for_parent_death_signal()
    if os.getppid() != parent_pid:  # parent already gone before prctl took effect
        return 1
    child = subprocess.Popen(argv[2:])
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    while True:
        code = child.poll()
        if code is not None:
            return code
        if stopping or os.getppid() != parent_pid:
            # Ignore our own SIGTERM from killpg below.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _end_group(child)
            return 143
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
