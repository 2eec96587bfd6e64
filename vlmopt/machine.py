"""Facts about the machine vlmopt runs on (CPU model and flags), shared by every stage that records provenance."""

from __future__ import annotations

import platform
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in _CPUINFO.read_text().splitlines():
            if line.lower().startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "cpu"


def cpu_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())
