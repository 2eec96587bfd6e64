"""`vlmopt compare A.json B.json`: is B's latency or throughput different from A's beyond run-to-run noise?"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ._common import console, fail


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        profile_a: Path = typer.Argument(..., help="benchmark profile A (the baseline), e.g. profiles/m/awq@l4.json"),
        profile_b: Path = typer.Argument(..., help="benchmark profile B (the candidate)"),
        confidence: float = typer.Option(0.95, "--confidence", help="confidence of the intervals and the verdict"),
        resamples: int = typer.Option(2000, "--resamples", min=100, help="bootstrap resamples"),
        seed: int = typer.Option(0, "--seed", help="bootstrap seed (same seed, same intervals)"),
        json_out: Path | None = typer.Option(None, "--json", help="also write the comparison as JSON here"),
    ) -> None:
        """Bootstrap confidence intervals on B's relative difference to A (TTFT and TPOT p50/p95, output
        throughput) over the load points both measured; per-request data when the profiles have it."""
        from vlmopt.bench.compare import compare_profiles
        from vlmopt.schemas.common import ContractError, atomic_write_text

        try:
            labels, results = compare_profiles(profile_a, profile_b, confidence, resamples, seed)
        except ContractError as exc:
            fail(str(exc))
        table = Table(title=f"B = {profile_b.name} vs A = {profile_a.name} over {len(labels)} load point(s), "
                            f"{confidence:.0%} intervals", title_justify="left")
        for col in ("metric", "A", "B", "B vs A", "interval", "verdict", "better", "from"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(r.metric, f"{r.a:.4g}", f"{r.b:.4g}", f"{r.relative_difference:+.1%}",
                          f"[{r.ci_low:+.1%}, {r.ci_high:+.1%}]", r.verdict, r.better or "-",
                          f"{r.method}, {r.points} point(s)")
        console.print(table)
        if json_out is not None:
            data = {"a": str(profile_a), "b": str(profile_b), "confidence": confidence, "points": labels,
                    "metrics": [r.as_dict() for r in results]}
            atomic_write_text(json_out, json.dumps(data, indent=2) + "\n")
            console.print(f"wrote {json_out}")
