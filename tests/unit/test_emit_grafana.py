"""Grafana dashboard: JSON structure Grafana's importer needs, the panels the issue asks for, and every PromQL
query checked by promtool's parser."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.unit.plan_fixtures import mixed_plan, require_tool
from vlmopt.emit import emit_grafana
from vlmopt.emit.grafana import GRAFANA_PATH


def dashboard() -> dict:
    return json.loads(emit_grafana(mixed_plan())[GRAFANA_PATH])


def test_dashboard_structure() -> None:
    d = dashboard()
    for key in ("uid", "title", "panels", "templating", "schemaVersion", "time"):
        assert key in d
    assert len(d["uid"]) <= 40
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in d["templating"]["list"]}
    assert variables == {"datasource", "service"}
    for panel in d["panels"]:
        assert panel["type"] == "timeseries"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


def test_panels_cover_ttft_tokens_kv_queue_and_gpu() -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard()["panels"]}
    joined = " ".join(exprs.values())
    for metric in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:generation_tokens_total",
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "DCGM_FI_DEV_GPU_UTIL",
    ):
        assert metric in joined, metric
    ttft = next(p for p in dashboard()["panels"] if p["title"].startswith("Time to first token"))
    # the workload's TTFT SLOs (200 ms p50 for chat, 500 ms p95 for chat, 1500 ms p95 for docs) as threshold lines
    steps = [s["value"] for s in ttft["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"] is not None]
    assert steps == [0.2, 0.5, 1.5]


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    """Wrap each panel query in a recording rule (with Grafana's $service expanded) and let promtool parse it."""
    rules = [
        {"record": f"vlmopt:panel{p['id']}:{t['refId']}", "expr": t["expr"].replace("$service", ".*")}
        for p in dashboard()["panels"]
        for t in p["targets"]
    ]
    (tmp_path / "panels.yml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", "panels.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout
