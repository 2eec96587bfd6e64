"""Read what the report needs from disk: the plan, benchmark profiles and variant manifests.

Errors are ContractError with the file and field named, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlmopt.schemas import BenchmarkProfile, ContractError, Plan, VariantManifest, load_model


def plan_file(path: Path) -> Path:
    """`deploy/NAME` or `deploy/NAME/plan.json` -> the plan.json path."""
    return path / "plan.json" if path.is_dir() else path


def load_plan(path: Path) -> Plan:
    if not path.exists():
        raise ContractError(f"{path}: no such plan folder or file")
    return load_model(Plan, plan_file(path))


def load_profiles_dir(folder: Path) -> list[BenchmarkProfile]:
    """Every *.json under `folder` (recursively) must be a benchmark profile; an invalid one is an error."""
    if not folder.is_dir():
        raise ContractError(f"{folder}: not a folder (--profiles expects the folder `vlmopt benchmark` wrote)")
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise ContractError(f"{folder}: no *.json benchmark profiles in it")
    return [load_model(BenchmarkProfile, f) for f in files]


def load_manifests(paths: Iterable[Path]) -> list[VariantManifest]:
    return [load_model(VariantManifest, p) for p in paths]


@dataclass
class Discovered:
    """Inputs found through references inside other files, and references that led nowhere (reported, not hidden)."""

    profiles: list[BenchmarkProfile] = field(default_factory=list)
    manifests: list[VariantManifest] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


# A provenance source is free text: a bare path, or a sentence naming one ("vlmopt benchmark run X (a@b.json)").
JSON_PATH = re.compile(r"[^\s()'\"]+\.json")


def _existing_json(reference: str, bases: Sequence[Path]) -> Path | None:
    for token in JSON_PATH.findall(reference):
        candidate = Path(token)
        options = [candidate] if candidate.is_absolute() else [base / candidate for base in bases]
        found = next((p for p in options if p.is_file()), None)
        if found is not None:
            return found
    return None


def discover_profiles(plan: Plan, bases: Sequence[Path]) -> Discovered:
    """Profiles the plan names as measured inputs (plan.inputs[].source that is a readable *.json file)."""
    found = Discovered()
    seen: set[Path] = set()
    for prov in plan.inputs:
        if prov.kind != "measured":
            continue
        path = _existing_json(prov.source, bases)
        if path is None or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            found.profiles.append(load_model(BenchmarkProfile, path))
        except ContractError as exc:
            found.unreadable.append(str(exc))
    return found


def discover_manifests(profiles: Sequence[BenchmarkProfile], bases: Sequence[Path]) -> Discovered:
    """Manifests the profiles point at (BenchmarkProfile.manifest)."""
    found = Discovered()
    seen: set[Path] = set()
    for profile in profiles:
        if not profile.manifest:
            continue
        path = _existing_json(profile.manifest, bases)
        if path is None:
            found.unreadable.append(f"{profile.manifest}: manifest named by profile {profile.variant} not found")
            continue
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        try:
            found.manifests.append(load_model(VariantManifest, path))
        except ContractError as exc:
            found.unreadable.append(str(exc))
    return found
