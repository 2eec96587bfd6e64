"""MIG geometry against NVIDIA's placement tables and worked examples (docs/hardware.md#mig-geometry).

The oracle below is deliberately independent of vlmopt.hw.mig: brute force over every combination of legal starts.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.mig import (
    RULES,
    InvalidLayoutError,
    MigLayout,
    creation_sequence,
    enumerate_layouts,
    free_memory_slots,
    validate_layout,
)

CATALOG = load_gpu_catalog()
MIG_GPUS = [g for g in CATALOG.gpus if g.mig is not None]
A100 = CATALOG.get("a100-40gb")
H100 = CATALOG.get("h100-sxm-80gb")
A30 = CATALOG.get("a30-24gb")


# ---- independent oracle -------------------------------------------------------------------------------------------
def placement_ok(gpu, profiles, starts) -> bool:
    table = {p.name: p for p in gpu.mig.profiles}
    used: set[int] = set()
    for name, start in zip(profiles, starts, strict=True):
        p = table[name]
        if start not in p.starts:
            return False
        slots = set(range(start, start + p.memory_slices))
        if slots & used:
            return False
        used |= slots
    return True


def counts_ok(gpu, profiles) -> bool:
    table = {p.name: p for p in gpu.mig.profiles}
    counts = Counter(profiles)
    if any(counts[n] > table[n].max_count for n in counts):
        return False
    if sum(table[n].media_extensions for n in profiles) > 1:
        return False
    return sum(table[n].compute_slices for n in profiles) <= gpu.mig.compute_slices


def any_placement(gpu, profiles) -> bool:
    """Backtracking over legal starts: is there any way to put all `profiles` on the GPU without overlap?"""
    table = {p.name: p for p in gpu.mig.profiles}

    def place(i: int, used: frozenset[int]) -> bool:
        if i == len(profiles):
            return True
        p = table[profiles[i]]
        for start in p.starts:
            slots = frozenset(range(start, start + p.memory_slices))
            if not slots & used and place(i + 1, used | slots):
                return True
        return False

    return place(0, frozenset())


def multiset_valid(gpu, profiles) -> bool:
    if not profiles or not counts_ok(gpu, profiles):
        return False
    return any_placement(gpu, list(profiles))


@functools.cache
def valid_keys_of(gpu_id: str) -> frozenset[tuple[str, ...]]:
    return frozenset(layout.key for layout in enumerate_layouts(CATALOG.get(gpu_id)))


def nvidia_names(gpu) -> dict[str, str]:
    """Profile class (docs/hardware.md#mig-geometry: 1g, 1gB = 1g with two memory slots, 2g, 3g, 4g, 7g) -> name."""
    names = {}
    for p in gpu.mig.profiles:
        if p.media_extensions:
            continue
        key = f"{p.compute_slices}g" + ("B" if p.compute_slices == 1 and p.memory_slices == 2 else "")
        names[key] = p.name
    return names


# ---- placement tables ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpu", [g for g in MIG_GPUS if g.mig.memory_slots == 8], ids=lambda g: g.id)
def test_seven_slice_placements_match_nvidia_smi_lgipp(gpu):
    # `nvidia-smi mig -lgipp` on A100/H100/H200 (same on every 7-slice GPU; docs/hardware.md#mig-geometry).
    lgipp = {"1g": [0, 1, 2, 3, 4, 5, 6], "1gB": [0, 2, 4, 6], "2g": [0, 2, 4], "3g": [0, 4], "4g": [0], "7g": [0]}
    names = nvidia_names(gpu)
    assert set(names) == set(lgipp)
    for key, starts in lgipp.items():
        assert gpu.mig_profile(names[key]).starts == starts, key


def test_a30_placements_match_nvidia_smi_lgipp():
    # `nvidia-smi mig -lgipp` on an A30: 1g {0,1,2,3}:1, 2g {0,2}:2, 4g {0}:4 (docs/hardware.md#mig-geometry).
    assert A30.mig_profile("1g.6gb").starts == [0, 1, 2, 3]
    assert A30.mig_profile("2g.12gb").starts == [0, 2]
    assert A30.mig_profile("4g.24gb").starts == [0]


# ---- enumeration counts (docs/hardware.md#valid-layouts) ---------------------------------------------------------
def without_1g_two_slot(gpu):
    geometry = gpu.mig.model_copy(
        update={"profiles": [p for p in gpu.mig.profiles if not (p.compute_slices == 1 and p.memory_slices == 2)]}
    )
    return gpu.model_copy(update={"mig": geometry})


def test_a100_base_set_has_37_layouts_and_12_maximal():
    base = without_1g_two_slot(A100)
    assert len(enumerate_layouts(base)) == 37
    maximal = {tuple(sorted(layout.counts().items())) for layout in enumerate_layouts(base, maximal_only=True)}
    expected = [
        {"7g.40gb": 1}, {"4g.20gb": 1, "3g.20gb": 1}, {"4g.20gb": 1, "2g.10gb": 1, "1g.5gb": 1},
        {"4g.20gb": 1, "1g.5gb": 3}, {"3g.20gb": 2}, {"3g.20gb": 1, "2g.10gb": 2},
        {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}, {"3g.20gb": 1, "1g.5gb": 4}, {"2g.10gb": 3, "1g.5gb": 1},
        {"2g.10gb": 2, "1g.5gb": 3}, {"2g.10gb": 1, "1g.5gb": 5}, {"1g.5gb": 7},
    ]
    assert maximal == {tuple(sorted(e.items())) for e in expected}


@pytest.mark.parametrize("gpu", [g for g in MIG_GPUS if g.mig.memory_slots == 8], ids=lambda g: g.id)
def test_full_seven_slice_set_has_77_layouts_and_28_maximal(gpu):
    assert len(enumerate_layouts(gpu)) == 77
    assert len(enumerate_layouts(gpu, maximal_only=True)) == 28


def test_enumeration_equals_brute_force_over_all_multisets():
    # Every multiset of at most 7 instances: valid by the oracle <=> enumerated (exactly once).
    for gpu in (A100, A30):
        names = [p.name for p in gpu.mig.profiles if not p.media_extensions]
        enumerated = [layout.key for layout in enumerate_layouts(gpu)]
        assert len(enumerated) == len(set(enumerated))
        brute = {
            tuple(sorted(combo))
            for size in range(1, gpu.mig.compute_slices + 1)
            for combo in itertools.combinations_with_replacement(names, size)
            if multiset_valid(gpu, list(combo))
        }
        assert set(enumerated) == brute


@pytest.mark.parametrize("gpu", MIG_GPUS, ids=lambda g: g.id)
def test_every_enumerated_layout_passes_the_placement_rules(gpu):
    table = {p.name: p for p in gpu.mig.profiles}
    for layout in enumerate_layouts(gpu, include_media_extensions=True):
        assert placement_ok(gpu, layout.profiles, layout.starts), layout
        assert counts_ok(gpu, layout.profiles), layout
        assert validate_layout(gpu, layout.profiles, layout.starts) == layout
        # Its order creates it with automatic placement, landing where the layout says.
        assert validate_layout(gpu, layout.profiles) == layout
        # Largest first: memory slices never grow along the creation order.
        sizes = [table[name].memory_slices for name, _ in layout.creation_order()]
        assert sizes == sorted(sizes, reverse=True), layout


@pytest.mark.parametrize("gpu", [A100, A30, H100], ids=lambda g: g.id)
def test_maximal_layouts_cannot_take_another_instance(gpu):
    names = [p.name for p in gpu.mig.profiles if not p.media_extensions]
    maximal = enumerate_layouts(gpu, maximal_only=True)
    for layout in maximal:
        assert not any(multiset_valid(gpu, [*layout.profiles, n]) for n in names), layout
    non_maximal = [lay for lay in enumerate_layouts(gpu) if lay.key not in {m.key for m in maximal}]
    for layout in non_maximal:
        assert any(multiset_valid(gpu, [*layout.profiles, n]) for n in names), layout


# ---- NVIDIA's worked example and mig-parted's all-balanced --------------------------------------------------------
def test_nvidia_order_9_19_14_19_works_and_lands_where_the_guide_shows():
    # MIG guide, "Creating GPU Instances" (docs/hardware.md#creation-order): -cgi 9,19,14,19 then -lgi shows
    # 1g.5gb 0:1, 1g.5gb 1:1, 2g.10gb 2:2, 3g.20gb 4:4.
    layout = validate_layout(A100, ["3g.20gb", "1g.5gb", "2g.10gb", "1g.5gb"])
    placed = list(zip(layout.profiles, layout.starts, strict=True))
    assert placed == [("3g.20gb", 4), ("1g.5gb", 0), ("2g.10gb", 2), ("1g.5gb", 1)]


def test_nvidia_order_19_19_14_9_fails_with_the_creation_order_rule():
    with pytest.raises(InvalidLayoutError) as err:
        validate_layout(A100, ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"])
    assert err.value.rule == "creation_order_fails"
    assert "-cgi 9,14,19,19" in str(err.value)
    # The same multiset is fine as a layout, and placed explicitly any order works.
    assert validate_layout(A100, ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"], [0, 1, 2, 4]).starts == (0, 1, 2, 4)


@pytest.mark.parametrize("gpu", MIG_GPUS, ids=lambda g: g.id)
def test_mig_parted_all_balanced_is_a_maximal_layout(gpu):
    # mig-parted pkg/mig/builder/balanced.go: 2 x 1g + 1 x 2g + 1 x 3g (7-slice), 2 x 1g + 1 x 2g (4-slice).
    names = nvidia_names(gpu)
    balanced = ([names["3g"]] if gpu.mig.memory_slots == 8 else []) + [names["2g"], names["1g"], names["1g"]]
    layout = validate_layout(gpu, balanced)  # largest first, as mig-parted's formula lists them
    maximal_keys = {lay.key for lay in enumerate_layouts(gpu, maximal_only=True)}
    assert layout.key in maximal_keys
    assert layout.compute_slices_used == gpu.mig.compute_slices


def test_seven_1g_instances_leave_memory_slot_7_idle():
    layout = validate_layout(A100, ["1g.5gb"] * 7)
    assert free_memory_slots(A100, layout) == [7]


def test_counts_and_label_follow_creation_order():
    layout = validate_layout(H100, ["1g.10gb", "3g.40gb", "1g.10gb", "2g.20gb"], [0, 4, 1, 2])
    assert layout.counts() == {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}
    assert layout.label() == "3g.40gb + 2g.20gb + 2x1g.10gb"
    assert layout.creation_order()[0] == ("3g.40gb", 4)


# ---- named rules --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("profiles", "starts", "rule", "words"),
    [
        (["5g.25gb"], None, "unknown_profile", "5g.25gb"),
        (["3g.20gb"], [2], "illegal_start", "legal starts: 0, 4"),
        (["2g.10gb", "1g.5gb"], [0, 1], "memory_slots_overlap", "memory slot 1"),
        (["4g.20gb", "2g.10gb", "2g.10gb"], None, "compute_slices_exceeded", "8 compute slices"),
        (["1g.10gb"] * 5, None, "max_count_exceeded", "at most 4"),
        (["1g.5gb+me", "1g.5gb+me"], None, "max_count_exceeded", "at most 1"),
        (["3g.20gb", "3g.20gb", "1g.5gb"], None, "memory_slots_overlap", "9 memory slots"),
        (["3g.20gb"], [0, 4], "starts_mismatch", "1 profiles but 2"),
        ([], None, "empty_layout", "at least one"),
    ],
)
def test_invalid_layouts_name_the_broken_rule(profiles, starts, rule, words):
    with pytest.raises(InvalidLayoutError) as err:
        validate_layout(A100, profiles, starts)
    assert err.value.rule == rule
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)


def test_gpu_without_mig_is_refused():
    with pytest.raises(InvalidLayoutError) as err:
        validate_layout(CATALOG.get("l4-24gb"), ["1g.6gb"])
    assert err.value.rule == "mig_unsupported"


def test_mig_layout_checks_lengths():
    with pytest.raises(ValueError):
        MigLayout(gpu_id="x", profiles=("1g.5gb",), starts=(0, 1))


# ---- property tests -----------------------------------------------------------------------------------------------
def broken_rule_holds(gpu, rule: str, profiles, starts) -> bool:
    """Independent check that a rejected layout really breaks the rule it was rejected for."""
    table = {p.name: p for p in gpu.mig.profiles}
    counts = Counter(profiles)
    if rule == "max_count_exceeded":
        media = sum(table[n].media_extensions for n in profiles)
        return any(counts[n] > table[n].max_count for n in counts) or media > 1
    if rule == "compute_slices_exceeded":
        return sum(table[n].compute_slices for n in profiles) > gpu.mig.compute_slices
    if rule == "illegal_start":
        return any(s not in table[n].starts for n, s in zip(profiles, starts, strict=True))
    if rule == "memory_slots_overlap":
        if starts is None:
            return not any_placement(gpu, list(profiles))
        slots = [slot for n, s in zip(profiles, starts, strict=True) for slot in range(s, s + table[n].memory_slices)]
        return len(slots) != len(set(slots))
    if rule == "creation_order_fails":
        return multiset_valid(gpu, list(profiles))  # the set is fine; only the order fails
    return False


@st.composite
def placed_layouts(draw):
    gpu = draw(st.sampled_from(MIG_GPUS))
    names = [p.name for p in gpu.mig.profiles]
    profiles = draw(st.lists(st.sampled_from(names), min_size=1, max_size=8))
    starts = draw(st.lists(st.integers(0, gpu.mig.memory_slots - 1), min_size=len(profiles),
                           max_size=len(profiles)))
    return gpu, profiles, starts


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placed_layouts())
def test_random_placed_layouts_are_accepted_exactly_when_the_rules_hold(case):
    gpu, profiles, starts = case
    try:
        layout = validate_layout(gpu, profiles, starts)
    except InvalidLayoutError as err:
        assert err.rule in RULES
        assert broken_rule_holds(gpu, err.rule, profiles, starts), (err.rule, profiles, starts)
    else:
        assert placement_ok(gpu, profiles, starts) and counts_ok(gpu, profiles)
        assert list(layout.starts) == starts


@st.composite
def unplaced_layouts(draw):
    gpu = draw(st.sampled_from(MIG_GPUS))
    names = [p.name for p in gpu.mig.profiles if not p.media_extensions]
    return gpu, draw(st.lists(st.sampled_from(names), min_size=1, max_size=7))


@settings(max_examples=300, deadline=None)
@given(unplaced_layouts())
def test_random_orders_agree_with_the_enumeration(case):
    gpu, profiles = case
    valid_keys = valid_keys_of(gpu.id)
    try:
        layout = validate_layout(gpu, profiles)
    except InvalidLayoutError as err:
        assert err.rule in RULES
        assert broken_rule_holds(gpu, err.rule, profiles, None), (err.rule, profiles)
        assert (tuple(sorted(profiles)) in valid_keys) == (err.rule == "creation_order_fails")
    else:
        assert layout.key in valid_keys
        assert placement_ok(gpu, layout.profiles, layout.starts)


def test_creation_sequence_carries_each_instance_s_payload_along() -> None:
    """The planner lists a GPU's replicas in creation order: each created instance maps back to its replica."""
    profiles = ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]  # no starts: this order must work as given
    names, starts, order = creation_sequence(H100, profiles, [None] * 4)
    assert names == profiles and order == [0, 1, 2, 3] and placement_ok(H100, names, starts)
    placed = ["1g.10gb", "3g.40gb", "2g.20gb"]
    fixed_starts = [6, 0, 4]  # explicit placements are kept, whatever the creation order
    names, starts, order = creation_sequence(H100, placed, fixed_starts)
    assert names == ["3g.40gb", "2g.20gb", "1g.10gb"] and starts == [0, 4, 6] and order == [1, 2, 0]
