"""run_targets: queues per device run side by side, failures are collected (a server's failure skips one target, a
contract error stops its queue), and Ctrl-C or a cancel stops every queue after each has saved its points.

The benchmark of one target is a fake injected through `benchmark=`; what it stands for (start vLLM, measure, save)
is tested against the real server in tests/e2e/test_benchmark_e2e.py."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from vlmopt.bench.loadgen import PointInterrupted
from vlmopt.bench.runner import BenchmarkFailed, BenchOptions
from vlmopt.bench.schedule import BenchmarkInterrupted, device_queues, run_targets
from vlmopt.bench.targets import BenchTarget
from vlmopt.schemas.common import ContractError

OPTIONS = BenchOptions(out_dir=Path("/nonexistent"))


def targets(*names: str) -> list[BenchTarget]:
    return [BenchTarget(variant=name, model="m") for name in names]


class Recorder:
    """A progress reporter that keeps its messages."""

    def __init__(self, variant: str) -> None:
        self.variant, self.messages, self.open = variant, [], False

    def variant_started(self, target, profile_path) -> None: ...
    def point_started(self, label, total) -> None: ...
    def request_done(self, result) -> None: ...
    def point_done(self, point) -> None: ...

    def message(self, text: str) -> None:
        self.messages.append(text)


class Reporters:
    def __init__(self) -> None:
        self.made: list[Recorder] = []

    @contextmanager
    def __call__(self, target: BenchTarget):
        recorder = Recorder(target.variant)
        self.made.append(recorder)
        recorder.open = True
        yield recorder
        recorder.open = False


def test_sequential_run_writes_every_profile_in_order() -> None:
    calls, reporters = [], Reporters()

    def fake(target, options, progress, device, cancel):
        assert progress.open and progress.variant == target.variant and options is OPTIONS
        calls.append((target.variant, device))
        return Path(f"/p/{target.variant}.json")

    results = run_targets(targets("a", "b", "c"), OPTIONS, reporters, benchmark=fake)
    assert calls == [("a", None), ("b", None), ("c", None)]
    assert results.written == [Path("/p/a.json"), Path("/p/b.json"), Path("/p/c.json")] and results.ok
    assert [r.open for r in reporters.made] == [False] * 3  # each reporter closed after its target


def test_one_device_is_passed_to_every_target() -> None:
    seen = []
    run_targets(targets("a", "b"), OPTIONS, devices=["GPU-1"],
                benchmark=lambda t, o, p, device, c: seen.append(device) or Path("x"))
    assert seen == ["GPU-1", "GPU-1"]


def test_a_failed_target_is_recorded_and_the_queue_goes_on() -> None:
    reporters = Reporters()

    def fake(target, options, progress, device, cancel):
        if target.variant == "b":
            raise BenchmarkFailed("the server died during point c=4; kept 3 completed requests\nlog tail ...")
        return Path(f"/p/{target.variant}.json")

    results = run_targets(targets("a", "b", "c"), OPTIONS, reporters, benchmark=fake)
    assert results.written == [Path("/p/a.json"), Path("/p/c.json")] and not results.ok
    [failure] = results.failures
    assert failure.target.variant == "b" and "server died" in failure.message and "log tail" in failure.message
    assert reporters.made[1].messages == ["failed: the server died during point c=4; kept 3 completed requests"]


def test_a_contract_error_stops_its_queue() -> None:
    ran = []

    def fake(target, options, progress, device, cancel):
        ran.append(target.variant)
        if target.variant == "a":
            raise ContractError("profiles/m/a@cpu.json: written with other options; --resume refused")
        return Path("x")

    results = run_targets(targets("a", "b"), OPTIONS, benchmark=fake)
    assert ran == ["a"] and results.written == []
    assert [f.target.variant for f in results.failures] == ["a"]


def test_devices_get_round_robin_queues_that_run_side_by_side() -> None:
    assert [(len(q), d) for q, d in device_queues(targets("a", "b", "c"), ["0", "1"])] == [(2, "0"), (1, "1")]
    assert device_queues(targets("a"), ["0", "1"]) == [(targets("a"), "0")]
    both_running = threading.Barrier(2, timeout=10)  # breaks (and fails the test) unless two run at once
    calls = []

    def fake(target, options, progress, device, cancel):
        calls.append((target.variant, device))
        if target.variant in ("a", "b"):
            both_running.wait()
        return Path(f"/p/{target.variant}.json")

    results = run_targets(targets("a", "b", "c", "d"), OPTIONS, devices=["0", "1"], benchmark=fake)
    assert sorted(calls) == [("a", "0"), ("b", "1"), ("c", "0"), ("d", "1")]
    assert sorted(results.written) == [Path(f"/p/{v}.json") for v in "abcd"] and results.ok


def _cancellable(saved: list[str]):
    """Like the real runner: runs until cancelled, then saves its points and raises PointInterrupted."""

    def fake(target, options, progress, device, cancel):
        if target.variant == "quick":
            return Path("/p/quick.json")
        if not cancel.wait(timeout=20):
            raise AssertionError("never cancelled")
        saved.append(target.variant)
        raise PointInterrupted(None)

    return fake


def test_cancel_stops_every_queue_after_each_saved() -> None:
    saved: list[str] = []
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(BenchmarkInterrupted) as stopped:
        run_targets(targets("quick", "slow-a", "slow-b", "never"), OPTIONS, devices=["0", "1"], cancel=cancel,
                    benchmark=_cancellable(saved))
    assert sorted(saved) == ["slow-a", "slow-b"]  # "never" (queued behind slow-a) did not start
    assert stopped.value.results.written == [Path("/p/quick.json")] and stopped.value.results.interrupted


@pytest.fixture
def terminal_ctrl_c():
    """Ctrl-C as at a terminal, even where the suite runs as a background job (which starts with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("terminal_ctrl_c")
def test_ctrl_c_in_the_main_thread_cancels_the_device_queues() -> None:
    saved: list[str] = []
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as stopped:  # BenchmarkInterrupted is one: plain handlers catch it
        run_targets(targets("slow-a", "slow-b"), OPTIONS, devices=["0", "1"], benchmark=_cancellable(saved))
    assert isinstance(stopped.value, BenchmarkInterrupted)
    assert sorted(saved) == ["slow-a", "slow-b"] and time.monotonic() - started < 10


def test_ctrl_c_in_a_sequential_run_keeps_what_was_written() -> None:
    def fake(target, options, progress, device, cancel):
        if target.variant == "b":
            raise KeyboardInterrupt
        return Path(f"/p/{target.variant}.json")

    with pytest.raises(BenchmarkInterrupted) as stopped:
        run_targets(targets("a", "b", "c"), OPTIONS, benchmark=fake)
    assert stopped.value.results.written == [Path("/p/a.json")]


def test_sigterm_is_handled_like_ctrl_c_and_the_handler_is_restored() -> None:
    """A container runtime stops a benchmark with SIGTERM (pod deletion, drain, spot notice): the queues stop after
    saving, as on Ctrl-C, instead of the process dying with its server still running."""
    saved: list[str] = []
    before = signal.getsignal(signal.SIGTERM)
    main = threading.main_thread().ident
    threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGTERM)).start()
    with pytest.raises(BenchmarkInterrupted) as stopped:
        run_targets(targets("slow-a", "slow-b"), OPTIONS, devices=["0", "1"], benchmark=_cancellable(saved))
    assert sorted(saved) == ["slow-a", "slow-b"] and stopped.value.results.interrupted
    assert signal.getsignal(signal.SIGTERM) is before
