"""How figures are written for people: money, rates, percentages, provenance labels. Pure functions."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from vlmopt.schemas import Provenance

MISSING = "n/a"


def is_number(value: object) -> bool:
    """A finite real number, numpy scalars included (pandas hands those out); bools and NaN are not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def usd(value: float | None, missing: str = MISSING) -> str:
    """Dollars with cents; sub-dollar figures keep four significant digits so a CPU plan's $0.0123/h stays legible."""
    if not is_number(value):
        return missing
    assert value is not None
    if value < 0:
        return "−" + usd(-value)
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    return f"${value:.4g}"


def number(value: float | None, digits: int = 3, missing: str = MISSING) -> str:
    """`digits` significant digits; large values as grouped integers (12,345), tiny ones in exponent form."""
    if not is_number(value):
        return missing
    assert value is not None
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def percent(fraction: float | None, missing: str = MISSING) -> str:
    if not is_number(fraction):
        return missing
    assert fraction is not None
    return f"{fraction * 100:.1f}%"


def saving_fraction(plan_value: float | None, baseline_value: float | None) -> float | None:
    """(baseline - plan) / baseline; None when either side is missing or the baseline is zero."""
    if not (is_number(plan_value) and is_number(baseline_value)) or not baseline_value:
        return None
    assert plan_value is not None
    return (baseline_value - plan_value) / baseline_value


def yes_no(flag: bool | None, yes: str = "pass", no: str = "FAIL") -> str:
    if flag is None:
        return MISSING
    return yes if flag else no


def provenance_label(prov: Provenance | None) -> str:
    return prov.label() if prov is not None else "unknown (no provenance recorded)"


def provenance_summary(provs: Iterable[Provenance], limit: int = 4) -> str:
    """One line naming each distinct source, grouped by kind: 'measured: a, b; estimated: roofline'."""
    by_kind: dict[str, list[str]] = {}
    for prov in provs:
        when = f" ({prov.date})" if prov.date else ""
        entry = f"{prov.source}{when}"
        bucket = by_kind.setdefault(prov.kind, [])
        if entry not in bucket:
            bucket.append(entry)
    if not by_kind:
        return "unknown (no provenance recorded)"
    parts = []
    for kind in ("measured", "estimated", "catalog", "user"):
        sources = by_kind.get(kind)
        if not sources:
            continue
        shown = ", ".join(sources[:limit])
        more = f" and {len(sources) - limit} more" if len(sources) > limit else ""
        parts.append(f"{kind}: {shown}{more}")
    return "; ".join(parts)


def provenance_kinds(provs: Iterable[Provenance]) -> str:
    """'measured + estimated': the kinds present, in a fixed order, for a compact table column."""
    kinds = {p.kind for p in provs}
    ordered = [k for k in ("measured", "estimated", "catalog", "user") if k in kinds]
    return " + ".join(ordered) if ordered else "unknown"
