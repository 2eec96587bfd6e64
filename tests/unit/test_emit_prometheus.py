"""Prometheus files: `promtool check config` / `check rules`, and `promtool test rules` showing the SLO alert fires
on a slow TTFT histogram and stays quiet on a fast one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.bundle_fixtures import emit
from tests.unit.plan_fixtures import mixed_plan, require_tool
from vlmopt.emit import emit_prometheus
from vlmopt.emit.prometheus import RULES_FILE

MONITORING = "clusters/aws-us-east-1/monitoring/"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture()
def prom_dir(tmp_path: Path) -> Path:
    for rel, text in emit_prometheus(mixed_plan()).items():
        (tmp_path / Path(rel).name).write_text(text)
    return tmp_path


@pytest.fixture()
def k8s_dir(tmp_path: Path) -> Path:
    for rel, text in emit(mixed_plan()).items():
        if rel.startswith(MONITORING):
            (tmp_path / Path(rel).name).write_text(text)
    return tmp_path


def test_promtool_check_config_static_and_rules(prom_dir: Path) -> None:
    config = promtool("check", "config", "prometheus-static.yml", cwd=prom_dir)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS" in config.stdout
    rules = promtool("check", "rules", RULES_FILE, cwd=prom_dir)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # 2 SLO keys for chat + 2 latency keys for docs + 4 generic rules + 1 replica-count rule per service
    assert "10 rules found" in rules.stdout


def test_cluster_rules_check_and_count_kube_state_metrics(k8s_dir: Path) -> None:
    rules = promtool("check", "rules", RULES_FILE, cwd=k8s_dir)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # 4 SLO + 4 generic + deployments available-vs-desired + 1 below-plan per service
    assert "11 rules found" in rules.stdout
    operator_rule = yaml.safe_load((k8s_dir / "prometheusrule.yaml").read_text())
    assert operator_rule["spec"] == yaml.safe_load((k8s_dir / RULES_FILE).read_text())
    assert operator_rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# Fields of Prometheus' kubernetes_sd_config that the emitter uses, and the roles it accepts.
K8S_SD_KEYS = {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata"}
K8S_SD_ROLES = {"node", "pod", "service", "endpoints", "endpointslice", "ingress"}


def test_kubernetes_scrape_config(k8s_dir: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery (it rejects `kubernetes_sd_configs` as unknown), so
    the discovery blocks are checked for their fields here and everything else (jobs, relabelling regexes, rule
    files) by promtool with each discovery block swapped for a static target."""
    prom_dir = k8s_dir
    config = yaml.safe_load((prom_dir / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs"):
            assert set(sd) <= K8S_SD_KEYS and sd["role"] in K8S_SD_ROLES
            assert all(isinstance(n, str) for n in sd["namespaces"]["names"])
        job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    (prom_dir / "k8s-swapped.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "k8s-swapped.yml", cwd=prom_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    relabel = {r.get("target_label") for r in config["scrape_configs"][0]["relabel_configs"]}
    assert {"service", "market", "slice", "variant", "replica_group", "namespace", "pod"} <= relabel


def test_promtool_rejects_a_broken_rule(prom_dir: Path) -> None:
    """The check is real: a PromQL syntax error fails it."""
    rules = yaml.safe_load((prom_dir / RULES_FILE).read_text())
    rules["groups"][0]["rules"][0]["expr"] += " >"
    (prom_dir / RULES_FILE).write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", RULES_FILE, cwd=prom_dir).returncode != 0


def test_static_scrape_config_lists_every_replica_and_dcgm_per_host(prom_dir: Path) -> None:
    config = yaml.safe_load((prom_dir / "prometheus-static.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"vllm", "dcgm-exporter"}
    targets = [t for sc in jobs["vllm"]["static_configs"] for t in sc["targets"]]
    assert len(targets) == len(set(targets)) == 26 + 12  # every replica of both services, once
    assert all(sc["labels"]["service"] in {"chat", "docs"} for sc in jobs["vllm"]["static_configs"])
    hosts = jobs["dcgm-exporter"]["static_configs"][0]["targets"]
    assert len(hosts) == 2 + 3 + 1 + 2  # one exporter per instance
    assert config["rule_files"] == [RULES_FILE]


def _slo_rule(prom_dir: Path, service: str, slo: str) -> dict:
    rules = yaml.safe_load((prom_dir / RULES_FILE).read_text())["groups"][0]["rules"]
    return next(r for r in rules if r.get("labels", {}).get("service") == service and r["labels"].get("slo") == slo)


def _ttft_series(counts_per_minute: dict[str, int]) -> list[dict]:
    """Cumulative histogram buckets growing by the given count each minute, for service chat."""
    return [
        {
            "series": f'vllm:time_to_first_token_seconds_bucket{{service="chat",le="{le}"}}',
            "values": f"0+{n}x40",
        }
        for le, n in counts_per_minute.items()
    ]


def test_ttft_slo_alert_fires_on_slow_first_tokens_and_not_on_fast_ones(prom_dir: Path) -> None:
    p95 = _slo_rule(prom_dir, "chat", "ttft_p95_ms")
    p50 = _slo_rule(prom_dir, "chat", "ttft_p50_ms")
    assert p95["expr"].endswith("> 0.5") and p50["expr"].endswith("> 0.2")

    def expected(rule: dict) -> dict:
        return {"exp_labels": {**rule["labels"]}, "exp_annotations": rule["annotations"]}

    # Slow: every first token lands between 0.5 s and 1 s -> p50 and p95 both above their SLOs.
    slow = _ttft_series({"0.1": 0, "0.25": 0, "0.5": 0, "1": 10, "+Inf": 10})
    # Fast: every first token within 100 ms -> no alert.
    fast = _ttft_series({"0.1": 10, "0.25": 10, "0.5": 10, "1": 10, "+Inf": 10})
    tests = {
        "rule_files": [RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": slow,
                "alert_rule_test": [
                    {"eval_time": "8m", "alertname": "VllmLatencyOverSlo", "exp_alerts": []},  # `for: 10m` not over
                    {
                        "eval_time": "20m",
                        "alertname": "VllmLatencyOverSlo",
                        "exp_alerts": [expected(p50), expected(p95)],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": fast,
                "alert_rule_test": [{"eval_time": "20m", "alertname": "VllmLatencyOverSlo", "exp_alerts": []}],
            },
        ],
    }
    (prom_dir / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "tests.yml", cwd=prom_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_down_and_kv_cache_alerts_fire(prom_dir: Path) -> None:
    tests = {
        "rule_files": [RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'up{job="vllm",instance="10.0.0.7:8000",service="docs"}', "values": "1 1 0x20"},
                    {
                        "series": 'vllm:kv_cache_usage_perc{instance="10.0.0.8:8000",service="chat"}',
                        "values": "0.99x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "VllmServerDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "page",
                                    "job": "vllm",
                                    "instance": "10.0.0.7:8000",
                                    "service": "docs",
                                },
                                "exp_annotations": {
                                    "summary": "vLLM replica 10.0.0.7:8000 (docs) is not answering /metrics",
                                    "description": "A replica is down or was interrupted (spot); capacity is below "
                                    "the plan.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "VllmKvCacheHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "instance": "10.0.0.8:8000", "service": "chat"},
                                "exp_annotations": {
                                    "summary": "chat on 10.0.0.8:8000: KV cache over 95 % for 10 minutes",
                                    "description": "Requests will be preempted or queued; the slice is too small for "
                                    "this load.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (prom_dir / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = promtool("test", "rules", "tests.yml", cwd=prom_dir)
    assert result.returncode == 0, result.stdout + result.stderr
