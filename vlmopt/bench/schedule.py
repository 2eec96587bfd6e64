"""`run_targets`: benchmark a list of targets, one after another or side by side (one queue per device), collecting
the profiles written and the failures; Ctrl-C (or SIGTERM: `docker stop`, a pod's deletion, a spot notice) stops
every queue after each has saved its measured points.

The `vlmopt benchmark` command and `vlmopt demo` both run their targets through here; they only parse options and
render. A failure of one target (its server died, it cannot be served here) is recorded and the queue goes on to
the next target, since each target has a server of its own. A contract error (an input file that cannot be used)
stops that queue: the next targets would read the same input.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from vlmopt.schemas.common import ContractError

from .loadgen import PointInterrupted
from .runner import BenchmarkFailed, BenchOptions, Progress, SilentProgress, benchmark_target
from .targets import BenchTarget

# benchmark_target's signature: (target, options, progress, visible devices, cancel event) -> profile path
BenchmarkFn = Callable[[BenchTarget, BenchOptions, Progress, str | None, threading.Event], Path]
ProgressFor = Callable[[BenchTarget], AbstractContextManager[Progress]]


@dataclass(frozen=True)
class TargetFailure:
    target: BenchTarget
    message: str
    device: str | None = None


@dataclass
class RunResults:
    """What a run produced, in completion order. `interrupted`: the user stopped it (the points measured before the
    stop are saved in the profiles listed in `written`)."""

    written: list[Path] = field(default_factory=list)
    failures: list[TargetFailure] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted


class BenchmarkInterrupted(KeyboardInterrupt):
    """Ctrl-C during `run_targets`: every server is stopped and measured points are saved; `results` says where."""

    def __init__(self, results: RunResults) -> None:
        super().__init__("interrupted by the user")
        self.results = results


def device_queues(targets: Sequence[BenchTarget], devices: Sequence[str]) -> list[tuple[list[BenchTarget], str | None]]:
    """Targets dealt round-robin over `devices` (one queue per device, run side by side); without two devices and
    two targets, one queue on the only device given (or on whatever the server picks)."""
    if len(devices) > 1 and len(targets) > 1:
        queues = [(list(targets[i :: len(devices)]), device) for i, device in enumerate(devices)]
        return [(queue, device) for queue, device in queues if queue]
    return [(list(targets), devices[0] if devices else None)]


def _silent(target: BenchTarget) -> AbstractContextManager[Progress]:
    return nullcontext(SilentProgress())


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While benchmarking, SIGTERM is handled like Ctrl-C: a container runtime stopping the process (pod deletion,
    node drain, spot notice, `docker stop`) sends SIGTERM, and the measured points must still be saved and the
    server stopped. Only the main thread may set signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_targets(
    targets: Sequence[BenchTarget],
    options: BenchOptions,
    progress_for: ProgressFor = _silent,
    devices: Sequence[str] = (),
    cancel: threading.Event | None = None,
    benchmark: BenchmarkFn = benchmark_target,
) -> RunResults:
    """Benchmark every target; returns the profiles written and the failures. Raises BenchmarkInterrupted (carrying
    the results so far) on Ctrl-C, after every queue has stopped its server and saved its points.

    `progress_for(target)` gives the progress reporter for one target (entered around its run); `devices` are
    CUDA_VISIBLE_DEVICES values, one queue per device; `cancel` lets a caller stop the run from another thread;
    `benchmark` runs one target (tests inject a fake).
    """
    cancel = cancel or threading.Event()
    results = RunResults()
    lock = threading.Lock()

    def run_queue(queue: list[BenchTarget], device: str | None) -> None:
        for target in queue:
            if cancel.is_set():
                return
            failure, stop_queue = None, False
            with progress_for(target) as progress:
                try:
                    path = benchmark(target, options, progress, device, cancel)
                except BenchmarkFailed as exc:
                    failure = TargetFailure(target, str(exc), device)
                except ContractError as exc:
                    failure, stop_queue = TargetFailure(target, str(exc), device), True
                if failure is not None:
                    progress.message(f"failed: {failure.message.splitlines()[0] if failure.message else 'no reason'}")
            with lock:
                if failure is None:
                    results.written.append(path)
                else:
                    results.failures.append(failure)
            if stop_queue:
                return

    queues = device_queues(targets, devices)
    try:
        with sigterm_as_interrupt():
            _run_queues(queues, run_queue, cancel)
    except (KeyboardInterrupt, PointInterrupted):
        cancel.set()
        results.interrupted = True
        raise BenchmarkInterrupted(results) from None
    return results


def _run_queues(queues, run_queue, cancel: threading.Event) -> None:
    if len(queues) == 1:
        run_queue(*queues[0])
        return
    with ThreadPoolExecutor(max_workers=len(queues)) as pool:
        futures = [pool.submit(run_queue, queue, device) for queue, device in queues]
        try:
            for future in futures:
                future.result()
        except (KeyboardInterrupt, PointInterrupted):
            cancel.set()  # each runner saves its point and stops its server
            for future in futures:
                try:
                    future.result()
                except PointInterrupted:
                    pass
            raise


__all__ = ["BenchmarkInterrupted", "RunResults", "TargetFailure", "device_queues", "run_targets",
           "sigterm_as_interrupt"]
