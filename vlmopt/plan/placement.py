"""From a solution's aggregate slice counts back to physical GPUs: which replicas share each GPU."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from .milp_model import Layout, Problem, Solution


@dataclass(frozen=True)
class PlacedGpu:
    """One physical GPU of a solution: its offer, its layout trimmed to the used slices, and who runs where."""

    offer: str
    layout: Layout
    assignment: tuple[tuple[str, str, str, int | None], ...]  # (slice, service, variant, start)


def lay_out_gpus(problem: Problem, solution: Solution) -> list[tuple[PlacedGpu, int]]:
    """Turn aggregate slice counts into identical-GPU groups: [(gpu, how many GPUs look exactly like it)].

    Fills GPUs column by column, largest slices first; unused slices are dropped from the layout (a subset of a
    valid placement is valid, and mig-parted should not create idle instances)."""
    remaining: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for (offer_key, profile, svc, var), count in sorted(solution.replicas.items()):
        remaining[(offer_key, profile)] += [(svc, var)] * count
    groups: dict[PlacedGpu, int] = defaultdict(int)
    for (offer_key, layout), count in sorted(solution.gpus.items(), key=lambda kv: (kv[0][0], kv[0][1].slices)):
        for _ in range(count):
            used: list[tuple[str, str, str, int | None]] = []
            for pos, profile in enumerate(layout.slices):
                queue = remaining.get((offer_key, profile))
                if queue:
                    svc, var = queue.pop(0)
                    start = layout.starts[pos] if layout.starts else None
                    used.append((profile, svc, var, start))
            if not used:
                continue
            kept = Layout(
                layout.gpu,
                tuple(u[0] for u in used),
                tuple(u[3] for u in used) if layout.starts else None,  # type: ignore[misc]
            )
            groups[PlacedGpu(offer_key, kept, tuple(used))] += 1
    return sorted(groups.items(), key=lambda kv: (kv[0].offer, kv[0].layout.slices, kv[0].assignment))
