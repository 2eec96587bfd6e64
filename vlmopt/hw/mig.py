"""MIG geometry: which sets of GPU instances fit one GPU, where they sit, and an order that creates them.

The model (docs/hardware.md#mig-geometry, from NVIDIA's MIG user guide): memory is a row of slots (8 on
A100/H100/H200/B200, 4 on A30); each profile occupies `memory_slices` consecutive slots starting at one of its legal
start indices; instances may not share a slot; their compute slices add up to at most the GPU's compute slices (7, or
4 on A30).

Creation order matters when instances are created without an explicit placement (`nvidia-smi mig -cgi a,b,c`):
the driver picks a position for each instance as it comes, and an early small instance can sit where a later large
one needed to go. The MIG guide's example (Getting Started with MIG, Creating GPU Instances): on an A100
`-cgi 19,19,14,9` fails with "Insufficient Resources" while `-cgi 9,19,14,19` succeeds and lands at 3g@4, 1g@0,
2g@2, 1g@1. `auto_place` models the driver's choice so a creation order can be checked before it reaches a machine;
see its docstring and docs/hardware.md#creation-order.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from vlmopt.schemas.catalog import GpuSpec, MigProfileSpec

# Names of the placement rules, carried by InvalidLayoutError.rule so callers and tests can tell them apart.
RULE_NO_MIG = "mig_unsupported"
RULE_UNKNOWN_PROFILE = "unknown_profile"
RULE_STARTS_MISMATCH = "starts_mismatch"
RULE_MAX_COUNT = "max_count_exceeded"
RULE_COMPUTE = "compute_slices_exceeded"
RULE_ILLEGAL_START = "illegal_start"
RULE_OVERLAP = "memory_slots_overlap"
RULE_CREATION_ORDER = "creation_order_fails"
RULE_EMPTY = "empty_layout"

RULES = (
    RULE_NO_MIG,
    RULE_UNKNOWN_PROFILE,
    RULE_STARTS_MISMATCH,
    RULE_MAX_COUNT,
    RULE_COMPUTE,
    RULE_ILLEGAL_START,
    RULE_OVERLAP,
    RULE_CREATION_ORDER,
    RULE_EMPTY,
)

# Only one instance with media extensions (+me) per GPU (MIG guide, Supported MIG Profiles: the +me profiles' instance
# count is 1; docs/hardware.md#mig-geometry).
MAX_MEDIA_EXTENSION_INSTANCES = 1


class InvalidLayoutError(ValueError):
    """A MIG layout breaks a placement rule; `rule` is one of RULES and the message says which instance and why."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class MigLayout:
    """GPU instances on one GPU, in an order that creates them (largest first where that works).

    `profiles[i]` starts at memory slot `starts[i]`. The sizes are carried along (not compared) so the layout can
    sort and sum itself without the catalog.
    """

    gpu_id: str
    profiles: tuple[str, ...]
    starts: tuple[int, ...]
    memory_slices: tuple[int, ...] = field(default=(), compare=False, repr=False)
    compute_slices: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.profiles) != len(self.starts):
            raise ValueError(f"{len(self.profiles)} profiles but {len(self.starts)} starts")

    def creation_order(self) -> list[tuple[str, int]]:
        """(profile, start) pairs in the order to create them: largest memory first, then most compute.

        Layouts built by this module already hold a working order (checked with `auto_place`); for those the
        result is that order. Placing each instance explicitly at its start (NVML
        `nvmlDeviceCreateGpuInstanceWithPlacement`) works in any order.
        """
        pairs = list(zip(self.profiles, self.starts, strict=True))
        if not self.memory_slices:
            return pairs
        keyed = zip(self.memory_slices, self.compute_slices, range(len(pairs)), pairs, strict=True)
        return [pair for *_, pair in sorted(keyed, key=lambda k: (-k[0], -k[1], k[2]))]

    def counts(self) -> dict[str, int]:
        """Profile name -> number of instances (mig-parted's `mig-devices` map), largest profile first."""
        return dict(Counter(name for name, _ in self.creation_order()))

    @property
    def key(self) -> tuple[str, ...]:
        """The multiset of profiles, sorted by name: two layouts with the same key offer the same slices."""
        return tuple(sorted(self.profiles))

    @property
    def compute_slices_used(self) -> int:
        return sum(self.compute_slices)

    @property
    def memory_slots_used(self) -> int:
        return sum(self.memory_slices)

    def label(self) -> str:
        """Short human form, e.g. '3g.40gb + 2g.20gb + 2x1g.10gb'."""
        return " + ".join(name if n == 1 else f"{n}x{name}" for name, n in self.counts().items())

    def __len__(self) -> int:
        return len(self.profiles)


def _geometry(gpu: GpuSpec):
    if gpu.mig is None:
        raise InvalidLayoutError(RULE_NO_MIG, f"{gpu.id} does not support MIG; it has no MIG profiles")
    return gpu.mig


def _profile_map(gpu: GpuSpec) -> dict[str, MigProfileSpec]:
    return {p.name: p for p in _geometry(gpu).profiles}


def _slots(profile: MigProfileSpec, start: int) -> range:
    return range(start, start + profile.memory_slices)


def _mask(profile: MigProfileSpec, start: int) -> int:
    return ((1 << profile.memory_slices) - 1) << start


def _largest_first(profiles: Sequence[MigProfileSpec]) -> list[MigProfileSpec]:
    return sorted(profiles, key=lambda p: (-p.memory_slices, -p.compute_slices, p.name))


def auto_place(gpu: GpuSpec, profiles: Sequence[str], occupied: Sequence[tuple[str, int]] = ()) -> list[int] | None:
    """Where the driver puts each instance when they are created one by one without a placement; None if one fails.

    A model, not NVIDIA's code: for each new instance, among its free legal starts, take the one that makes the
    fewest other placements (of every profile the GPU offers) impossible; on a tie, the lowest start. Fitted to
    the MIG guide's A100 examples (docs/hardware.md#creation-order): it reproduces `-cgi 9,19,14,19` landing at
    3g@4, 1g@0, 2g@2, 1g@1, and `-cgi 19,19,14,9` failing on the 3g after the smaller ones took 1g@6, 1g@4,
    2g@0 (the starts implied by the GPU instance ids 13, 11, 3 in that output). vlmopt's apply path places
    instances explicitly, so the model only decides which `-cgi` order to recommend.
    """
    table = _profile_map(gpu)
    all_placements = [(p, s) for p in table.values() for s in p.starts]
    used = 0
    for name, start in occupied:
        used |= _mask(table[name], start)
    starts: list[int] = []
    for name in profiles:
        profile = table[name]
        free = [s for s in profile.starts if not used & _mask(profile, s)]
        if not free:
            return None
        possible = [_mask(p, s) for p, s in all_placements if not used & _mask(p, s)]

        def damage(start: int, profile: MigProfileSpec = profile, possible: list[int] = possible) -> int:
            taken = _mask(profile, start)
            return sum(1 for mask in possible if mask & taken)

        chosen = min(free, key=lambda s: (damage(s), s))
        used |= _mask(profile, chosen)
        starts.append(chosen)
    return starts


def _check_counts(gpu: GpuSpec, chosen: Sequence[MigProfileSpec], memory_total: bool = True) -> None:
    geometry = _geometry(gpu)
    counts = Counter(p.name for p in chosen)
    for profile in _largest_first({p.name: p for p in chosen}.values()):
        if counts[profile.name] > profile.max_count:
            raise InvalidLayoutError(
                RULE_MAX_COUNT,
                f"{counts[profile.name]} x {profile.name} on {gpu.id}: at most {profile.max_count} "
                f"{profile.name} instance(s) fit one GPU",
            )
    media = [p.name for p in chosen if p.media_extensions]
    if len(media) > MAX_MEDIA_EXTENSION_INSTANCES:
        raise InvalidLayoutError(
            RULE_MAX_COUNT,
            f"{len(media)} instances with media extensions ({', '.join(media)}) on {gpu.id}: "
            f"only {MAX_MEDIA_EXTENSION_INSTANCES} +me instance fits one GPU",
        )
    compute = sum(p.compute_slices for p in chosen)
    if compute > geometry.compute_slices:
        raise InvalidLayoutError(
            RULE_COMPUTE,
            f"{' + '.join(p.name for p in chosen)} needs {compute} compute slices; {gpu.id} has "
            f"{geometry.compute_slices}",
        )
    memory = sum(p.memory_slices for p in chosen)
    if memory_total and memory > geometry.memory_slots:
        raise InvalidLayoutError(
            RULE_OVERLAP,
            f"{' + '.join(p.name for p in chosen)} needs {memory} memory slots; {gpu.id} has "
            f"{geometry.memory_slots}, so two instances would overlap",
        )


def _find_placement(chosen: Sequence[MigProfileSpec]) -> list[int] | None:
    """Any non-overlapping legal placement of `chosen` (depth-first, largest first), in the order given."""
    order = sorted(range(len(chosen)), key=lambda i: (-chosen[i].memory_slices, -chosen[i].compute_slices, i))
    starts: dict[int, int] = {}

    def place(k: int, used: int) -> bool:
        if k == len(order):
            return True
        index = order[k]
        profile = chosen[index]
        for start in profile.starts:
            mask = _mask(profile, start)
            if not used & mask:
                starts[index] = start
                if place(k + 1, used | mask):
                    return True
        return False

    return [starts[i] for i in range(len(chosen))] if place(0, 0) else None


def _layout(gpu: GpuSpec, chosen: Sequence[MigProfileSpec], starts: Sequence[int]) -> MigLayout:
    return MigLayout(
        gpu_id=gpu.id,
        profiles=tuple(p.name for p in chosen),
        starts=tuple(starts),
        memory_slices=tuple(p.memory_slices for p in chosen),
        compute_slices=tuple(p.compute_slices for p in chosen),
    )


def working_order(gpu: GpuSpec, profiles: Sequence[str]) -> MigLayout | None:
    """The multiset `profiles` in an order that `auto_place` can create, largest first when that works.

    Falls back to trying other orders (what mig-parted does on the machine: iteratePermutationsUntilSuccess in
    https://github.com/NVIDIA/mig-parted/blob/bd7160f43f16462eeb21e1eda5e67b5b6b03fd7d/pkg/mig/config/config.go);
    None when no order works.
    """
    table = _profile_map(gpu)
    first = _largest_first([table[name] for name in profiles])
    candidates = itertools.chain([first], (list(p) for p in itertools.permutations(first)))
    seen: set[tuple[str, ...]] = set()
    for order in candidates:
        names = tuple(p.name for p in order)
        if names in seen:
            continue
        seen.add(names)
        starts = auto_place(gpu, names)
        if starts is not None:
            return _layout(gpu, order, starts)
    return None


def validate_layout(gpu: GpuSpec, profiles: Sequence[str], starts: Sequence[int] | None = None) -> MigLayout:
    """Check a layout against the placement rules; return it as a MigLayout or raise InvalidLayoutError.

    With `starts`, each instance must begin at a legal start and no two may share a memory slot (explicit
    placement: any creation order works). Without `starts`, the profiles are created in the given order with the
    driver's automatic placement (`auto_place`); if the multiset fits but that order does not, the error is
    `creation_order_fails` and names an order that works.
    """
    table = _profile_map(gpu)
    if not profiles:
        raise InvalidLayoutError(RULE_EMPTY, f"empty MIG layout for {gpu.id}: give at least one profile")
    unknown = [name for name in profiles if name not in table]
    if unknown:
        raise InvalidLayoutError(
            RULE_UNKNOWN_PROFILE,
            f"unknown MIG profile {unknown[0]!r} for {gpu.id}; known: {', '.join(table)}",
        )
    if starts is not None and len(starts) != len(profiles):
        raise InvalidLayoutError(
            RULE_STARTS_MISMATCH, f"{len(profiles)} profiles but {len(starts)} start positions"
        )
    chosen = [table[name] for name in profiles]
    # With explicit starts the slot-by-slot checks below name the exact instance at fault; the total is implied.
    _check_counts(gpu, chosen, memory_total=starts is None)

    if starts is not None:
        for profile, start in zip(chosen, starts, strict=True):
            if start not in profile.starts:
                raise InvalidLayoutError(
                    RULE_ILLEGAL_START,
                    f"{profile.name} cannot start at memory slot {start} on {gpu.id}; legal starts: "
                    f"{', '.join(map(str, profile.starts))}",
                )
        owner: dict[int, str] = {}
        for profile, start in zip(chosen, starts, strict=True):
            for slot in _slots(profile, start):
                if slot in owner:
                    raise InvalidLayoutError(
                        RULE_OVERLAP,
                        f"{profile.name}@{start} and {owner[slot]} both use memory slot {slot} on {gpu.id}",
                    )
                owner[slot] = f"{profile.name}@{start}"
        return _layout(gpu, chosen, starts)

    if _find_placement(chosen) is None:
        raise InvalidLayoutError(
            RULE_OVERLAP,
            f"{' + '.join(profiles)} cannot be placed on {gpu.id} without two instances sharing memory slots",
        )
    auto = auto_place(gpu, profiles)
    if auto is None:
        good = working_order(gpu, profiles)
        hint = f"; create in this order instead: {', '.join(good.profiles)}" if good else ""
        ids = ",".join(str(table[name].profile_id) for name in good.profiles) if good else ""
        hint += f" (nvidia-smi mig -cgi {ids})" if good else ""
        raise InvalidLayoutError(
            RULE_CREATION_ORDER,
            f"creating {', '.join(profiles)} in this order with automatic placement fails on {gpu.id}: an "
            f"earlier instance takes the memory slots a later one needs{hint}",
        )
    return _layout(gpu, chosen, auto)


def creation_sequence(
    gpu: GpuSpec, profiles: Sequence[str], starts: Sequence[int | None]
) -> tuple[list[str], list[int], list[int]]:
    """Validate one GPU's instances and give them in creation order: (profile names, start slots, and for each
    created instance its index in `profiles`), so whatever runs on instance i follows it.

    `starts[i]` None (or all of them None) lets `validate_layout` place the instance; equal (profile, start) pairs
    keep their given order.
    """
    given = [start for start in starts if start is not None]
    layout = validate_layout(gpu, list(profiles), given if len(given) == len(profiles) else None)
    created = layout.creation_order()
    remaining = list(enumerate(zip(profiles, starts, strict=True)))
    order = []
    for name, start in created:
        index = next(i for i, (profile, at) in remaining if profile == name and (at is None or at == start))
        remaining = [(i, pair) for i, pair in remaining if i != index]
        order.append(index)
    return [name for name, _ in created], [start for _, start in created], order


def _candidate_profiles(gpu: GpuSpec, include_media_extensions: bool) -> list[MigProfileSpec]:
    return [p for p in _geometry(gpu).profiles if include_media_extensions or not p.media_extensions]


def enumerate_layouts(
    gpu: GpuSpec, maximal_only: bool = False, include_media_extensions: bool = False
) -> list[MigLayout]:
    """Every non-empty layout the placement rules allow, one per multiset of profiles, largest first.

    Each layout keeps one working placement (the one its creation order produces). `maximal_only` keeps the
    layouts to which no further instance of any profile can be added. Media-extension (+me) profiles are left
    out unless asked for: they offer the same memory and compute as their plain twin.
    """
    profiles = _candidate_profiles(gpu, include_media_extensions)
    geometry = _geometry(gpu)
    placements = [(p, s) for p in _largest_first(profiles) for s in p.starts]
    multisets: set[tuple[str, ...]] = set()

    def extend(first: int, used: int, chosen: list[MigProfileSpec], compute: int) -> None:
        for index in range(first, len(placements)):
            profile, start = placements[index]
            mask = _mask(profile, start)
            if used & mask or compute + profile.compute_slices > geometry.compute_slices:
                continue
            grown = [*chosen, profile]
            counts = Counter(p.name for p in grown)
            if counts[profile.name] > profile.max_count:
                continue
            if sum(p.media_extensions for p in grown) > MAX_MEDIA_EXTENSION_INSTANCES:
                continue
            multisets.add(tuple(sorted(counts.elements())))
            extend(index + 1, used | mask, grown, compute + profile.compute_slices)

    extend(0, 0, [], 0)

    if maximal_only:
        names = [p.name for p in profiles]
        multisets = {m for m in multisets if not any(tuple(sorted((*m, n))) in multisets for n in names)}

    layouts = []
    for multiset in multisets:
        layout = working_order(gpu, multiset)
        if layout is None:  # a valid multiset always has an explicit placement; keep it, placed explicitly
            table = _profile_map(gpu)
            chosen = _largest_first([table[n] for n in multiset])
            explicit = _find_placement(chosen)
            assert explicit is not None
            layout = _layout(gpu, chosen, explicit)
        layouts.append(layout)
    return sorted(layouts, key=_layout_sort_key)


def _layout_sort_key(layout: MigLayout) -> tuple:
    # Fewest, largest instances first: the order a human reads a geometry table in.
    return (len(layout), [-m for m in layout.memory_slices], [-c for c in layout.compute_slices], layout.profiles)


def free_memory_slots(gpu: GpuSpec, layout: MigLayout) -> list[int]:
    """Memory slots no instance of `layout` occupies (e.g. slot 7 stays idle under 7 x 1g)."""
    table = _profile_map(gpu)
    pairs = zip(layout.profiles, layout.starts, strict=True)
    used = {slot for name, start in pairs for slot in _slots(table[name], start)}
    return [slot for slot in range(_geometry(gpu).memory_slots) if slot not in used]


__all__ = [
    "RULES",
    "InvalidLayoutError",
    "MigLayout",
    "auto_place",
    "enumerate_layouts",
    "free_memory_slots",
    "validate_layout",
    "working_order",
]
