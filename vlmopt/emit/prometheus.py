"""Prometheus scrape config (vLLM `/metrics`, DCGM exporter) and alert rules from the plan's SLOs.

Metric names: research/benchmark.md §2 (vLLM 0.32.0 `vllm/v1/metrics/loggers.py`, confirmed by a live scrape).
Latency SLO alerts read the same histograms the benchmark's percentiles describe, so an alert means "the SLO the
plan was sized for is being missed", per service.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmopt.schemas import Plan

from ._common import DEFAULT_SETTINGS, GENERATED_BY, EmitSettings, dump_yaml
from .groups import replica_endpoints, replica_host, service_plans, services_in_order

PROMETHEUS_DIR = "prometheus"
RULES_FILE = "alerts.yml"


@dataclass(frozen=True)
class LatencySlo:
    """How one workload SLO key maps onto a vLLM histogram."""

    histogram: str
    quantile: float
    what: str


# Slo keys (vlmopt/schemas/workload.py) -> vLLM histogram (seconds) and quantile.
SLO_HISTOGRAMS: dict[str, LatencySlo] = {
    "ttft_p50_ms": LatencySlo("vllm:time_to_first_token_seconds", 0.50, "TTFT p50"),
    "ttft_p95_ms": LatencySlo("vllm:time_to_first_token_seconds", 0.95, "TTFT p95"),
    "tpot_p95_ms": LatencySlo("vllm:request_time_per_output_token_seconds", 0.95, "TPOT p95"),
    "e2el_p50_ms": LatencySlo("vllm:e2e_request_latency_seconds", 0.50, "end-to-end latency p50"),
    "e2el_p95_ms": LatencySlo("vllm:e2e_request_latency_seconds", 0.95, "end-to-end latency p95"),
}

KV_CACHE_HIGH = 0.95


def quantile_expr(histogram: str, quantile: float, matcher: str, window: str = "5m") -> str:
    return f"histogram_quantile({quantile:g}, sum by (le) (rate({histogram}_bucket{{{matcher}}}[{window}])))"


def _relabel_pod_label(label: str, target: str) -> dict:
    meta = "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)
    return {"source_labels": [meta], "target_label": target}


def _kubernetes_scrape_configs(settings: EmitSettings) -> list[dict]:
    vllm = {
        "job_name": "vllm",
        "metrics_path": "/metrics",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [settings.namespace]}}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_part_of"],
                "regex": "vlmopt",
                "action": "keep",
            },
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
            _relabel_pod_label("vlmopt.io/service", "service"),
            _relabel_pod_label("vlmopt.io/market", "market"),
            _relabel_pod_label("vlmopt.io/slice", "slice"),
            _relabel_pod_label("app.kubernetes.io/instance", "replica_group"),
            # The Prometheus adapter maps these two onto the HPA's pods (cluster/prometheus-adapter-values.yaml).
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }
    dcgm = {
        "job_name": "dcgm-exporter",
        "kubernetes_sd_configs": [{"role": "endpoints", "namespaces": {"names": [settings.gpu_operator_namespace]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_service_name"], "regex": settings.dcgm_service, "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ],
    }
    return [vllm, dcgm]


def _static_scrape_configs(plan: Plan, settings: EmitSettings) -> list[dict]:
    """Replicas as processes on hosts (vllm/*.sh): the same ports as vllm/replicas.json and nginx/."""
    replicas: dict[tuple[str, str, str], list[str]] = {}
    hosts: dict[str, None] = {}
    for ep in replica_endpoints(plan, settings):
        key = (ep.group.service, ep.group.market.replace("_", "-"), ep.group.engine.slice)
        host = replica_host(ep, settings)
        replicas.setdefault(key, []).append(f"{host}:{ep.port}")
        hosts[host] = None
    vllm = {
        "job_name": "vllm",
        "metrics_path": "/metrics",
        "static_configs": [
            {"targets": targets, "labels": {"service": service, "market": market, "slice": slice_name}}
            for (service, market, slice_name), targets in replicas.items()
        ],
    }
    dcgm = {
        "job_name": "dcgm-exporter",
        "static_configs": [{"targets": [f"{h}:{settings.dcgm_port}" for h in hosts]}],
        # The dashboards group GPUs by node: take it from the target's host.
        "relabel_configs": [{"source_labels": ["__address__"], "regex": "([^:]+)(?::\\d+)?", "target_label": "node"}],
    }
    return [vllm, dcgm]


def scrape_config(plan: Plan, settings: EmitSettings = DEFAULT_SETTINGS, kubernetes: bool = True) -> dict:
    """Kubernetes service discovery (pods of the bundle's Deployments, the GPU Operator's DCGM exporter), or static
    targets for replicas run as processes on hosts. Both give every series the labels the rules use."""
    jobs = _kubernetes_scrape_configs(settings) if kubernetes else _static_scrape_configs(plan, settings)
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [RULES_FILE],
        "scrape_configs": jobs,
    }


def _slo_rules(plan: Plan) -> list[dict]:
    rules: list[dict] = []
    plans = service_plans(plan)
    for service in services_in_order(plan):
        slo = getattr(plans.get(service), "slo", None) or {}
        for key, limit_ms in slo.items():
            spec = SLO_HISTOGRAMS.get(key)
            if spec is None:
                continue
            matcher = f'service="{service}"'
            rules.append(
                {
                    "alert": "VllmLatencyOverSlo",
                    "expr": f"{quantile_expr(spec.histogram, spec.quantile, matcher)} > {limit_ms / 1000:g}",
                    "for": "10m",
                    "labels": {"severity": "page", "service": service, "slo": key},
                    "annotations": {
                        "summary": f"{service}: {spec.what} above the SLO of {limit_ms:g} ms",
                        # No $value here: the text stays fixed, so alert tests can compare it exactly.
                        "description": (
                            f"{spec.what} over the last 5 minutes is above the {limit_ms:g} ms the plan {plan.name} "
                            "was sized for; add replicas or check the queue."
                        ),
                    },
                }
            )
    return rules


def alert_rules(plan: Plan) -> dict:
    generic = [
        {
            "alert": "VllmKvCacheHigh",
            "expr": f"max by (service, instance) (vllm:kv_cache_usage_perc) > {KV_CACHE_HIGH}",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.service }} on {{ $labels.instance }}: KV cache over 95 % for 10 minutes",
                "description": "Requests will be preempted or queued; the slice is too small for this load.",
            },
        },
        {
            "alert": "VllmQueueGrowing",
            "expr": (
                "sum by (service) (vllm:num_requests_waiting) > 0 and "
                "deriv(sum by (service) (vllm:num_requests_waiting)[10m:30s]) > 0"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.service }}: requests are waiting and the queue keeps growing",
                "description": "Load is above what the running replicas sustain; the HPA should be adding replicas.",
            },
        },
        {
            "alert": "VllmServerDown",
            "expr": 'up{job="vllm"} == 0',
            "for": "2m",
            "labels": {"severity": "page"},
            "annotations": {
                "summary": "vLLM replica {{ $labels.instance }} ({{ $labels.service }}) is not answering /metrics",
                "description": "A replica is down or was interrupted (spot); capacity is below the plan.",
            },
        },
        {
            "alert": "DcgmExporterDown",
            "expr": 'up{job="dcgm-exporter"} == 0',
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "DCGM exporter on {{ $labels.node }} is down: no GPU utilisation data",
                "description": "GPU panels and utilisation-based decisions are blind until it is back.",
            },
        },
    ]
    return {"groups": [{"name": f"vlmopt-{plan.name}", "rules": [*_slo_rules(plan), *generic]}]}


def emit_prometheus(plan: Plan, settings: EmitSettings = DEFAULT_SETTINGS) -> dict[str, str]:
    header = [f"{GENERATED_BY} ({plan.name}); check with promtool check config / check rules"]
    return {
        f"{PROMETHEUS_DIR}/prometheus-kubernetes.yml": dump_yaml(
            scrape_config(plan, settings, kubernetes=True), header
        ),
        f"{PROMETHEUS_DIR}/prometheus-static.yml": dump_yaml(scrape_config(plan, settings, kubernetes=False), header),
        f"{PROMETHEUS_DIR}/{RULES_FILE}": dump_yaml(alert_rules(plan), header),
    }
