"""Writes a BenchmarkProfile incrementally: after every point, atomically, with the requests in a JSONL beside it.

Order of writes per point: the point's request records are appended (and fsynced) to `<name>.requests.jsonl`
first, then the profile is replaced atomically. A crash between the two leaves records of a point the profile does
not list; `--resume` drops those and re-measures that point, so a crash loses at most the point in flight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from vlmopt.schemas.common import ContractError, load_model, save_model, utc_now_iso
from vlmopt.schemas.profile import BenchmarkProfile, CapacitySummary, LoadPoint

CSV_LEAD_COLUMNS = [
    "label", "arrival", "max_concurrency", "request_rate", "num_prompts", "completed", "failed", "duration",
    "request_throughput", "output_throughput", "total_token_throughput", "request_goodput",
    "median_ttft_ms", "p95_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p95_tpot_ms", "median_itl_ms",
    "median_e2el_ms", "p95_e2el_ms", "images_per_s", "image_token_share", "mm_cache_hit_rate",
    "prefix_cache_hit_rate", "max_kv_cache_usage_perc", "num_preemptions", "meets_slo", "incomplete",
    "requested_input_tokens", "mean_text_input_tokens", "mean_image_input_tokens", "input_tokens_mismatch",
]


def requests_path_for(profile_path: Path) -> Path:
    return profile_path.with_name(profile_path.stem + ".requests.jsonl")


def csv_path_for(profile_path: Path) -> Path:
    return profile_path.with_suffix(".csv")


# Measured facts about the server may be refilled on resume; the requested workload (how prompts are sized included)
# may not change.
MEASURED_WORKLOAD_FIELDS = {"image_tokens_per_image", "chat_template_tokens", "tokenizer_special_tokens"}


def _comparable_workload(profile: BenchmarkProfile) -> dict[str, Any]:
    return profile.workload.model_dump(exclude=MEASURED_WORKLOAD_FIELDS)


class ProfileWriter:
    def __init__(self, path: Path, profile: BenchmarkProfile) -> None:
        self.path = path
        self.requests_path = requests_path_for(path)
        self.profile = profile
        self.profile.requests_file = self.requests_path.name

    @classmethod
    def open(cls, path: Path | str, fresh: BenchmarkProfile, resume: bool) -> ProfileWriter:
        """Start a new profile at `path`, or with `resume` continue the one there (same workload required)."""
        path = Path(path)
        if resume and path.exists():
            existing = load_model(BenchmarkProfile, path)
            if _comparable_workload(existing) != _comparable_workload(fresh):
                raise ContractError(
                    f"{path}: --resume needs the same workload as the saved profile "
                    f"(saved {existing.workload.model_dump_json(exclude=MEASURED_WORKLOAD_FIELDS)})"
                )
            existing.points = [p for p in existing.points if not p.incomplete]
            existing.complete = False
            existing.incomplete_reason = None
            existing.finished = None
            writer = cls(path, existing)
            writer._keep_requests_of(p.label for p in existing.points)
            writer.save()
            return writer
        writer = cls(path, fresh)
        writer.requests_path.parent.mkdir(parents=True, exist_ok=True)
        writer.requests_path.write_text("")
        writer.save()
        return writer

    @property
    def done_labels(self) -> set[str]:
        return {p.label for p in self.profile.points if not p.incomplete}

    def point(self, label: str) -> LoadPoint | None:
        return next((p for p in self.profile.points if p.label == label), None)

    def _keep_requests_of(self, labels: Iterable[str]) -> None:
        keep = set(labels)
        if not self.requests_path.exists():
            return
        lines = []
        for line in self.requests_path.read_text().splitlines():
            try:
                if json.loads(line).get("point") in keep:
                    lines.append(line)
            except ValueError:
                continue  # a torn last line from a crash
        self.requests_path.write_text("".join(f"{line}\n" for line in lines))

    def add_point(self, point: LoadPoint, request_records: list[dict[str, Any]]) -> None:
        with open(self.requests_path, "a") as fh:
            for record in request_records:
                fh.write(json.dumps({"point": point.label, **record}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.profile.points = [p for p in self.profile.points if p.label != point.label] + [point]
        self.save()

    def set_capacity(self, capacity: CapacitySummary | None) -> None:
        self.profile.capacity = capacity
        self.save()

    def finish(self, complete: bool, reason: str | None = None) -> None:
        self.profile.complete = complete
        self.profile.incomplete_reason = None if complete else reason
        self.profile.finished = utc_now_iso()
        self.save()
        export_csv(self.profile, csv_path_for(self.path))

    def save(self) -> None:
        save_model(self.profile, self.path)


def points_frame(profile: BenchmarkProfile) -> pd.DataFrame:
    """One row per load point; the common columns first, every other metric after them."""
    rows = [p.model_dump(mode="json", exclude={"errors", "error_examples"}) for p in profile.points]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=CSV_LEAD_COLUMNS)
    lead = [c for c in CSV_LEAD_COLUMNS if c in frame.columns]
    frame = frame[lead + [c for c in frame.columns if c not in lead]]
    frame.insert(0, "variant", profile.variant)
    frame.insert(1, "device", profile.device.slug())
    return frame


def export_csv(profile: BenchmarkProfile, path: Path) -> Path:
    from vlmopt.schemas.common import atomic_write_text

    return atomic_write_text(path, points_frame(profile).to_csv(index=False))
