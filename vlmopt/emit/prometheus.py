"""Prometheus scrape configs (vLLM `/metrics`, DCGM exporter) and alert rules from the plan's SLOs, for VMs
(`prometheus/`, static targets) and per Kubernetes cluster (`clusters/<c>/monitoring/`: a plain Prometheus config,
and the Prometheus Operator's PodMonitor + PrometheusRule).

Metric names are vLLM 0.32.0's (`vllm/v1/metrics/loggers.py`, checked against a live scrape in docs/benchmark.md).
Latency SLO alerts read the same histograms the benchmark's percentiles describe, so an alert means "the SLO the
plan was sized for is being missed", per service. Availability alerts compare what runs with what the plan
bought: on Kubernetes from kube-state-metrics (a preempted pod disappears from discovery, so `up == 0` never sees
it), on VMs from the static targets' `up`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmopt.schemas import Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, GENERATED_BY, dump_yaml, dump_yaml_documents, label_value
from .groups import replica_endpoints, replica_groups, replica_host, service_plans, services_in_order

PROMETHEUS_DIR = "prometheus"
RULES_FILE = "alerts.yml"
MONITORING_DIR = "monitoring"


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


POD_LABELS = (
    ("vlmopt.io/service", "service"),
    ("vlmopt.io/market", "market"),
    ("vlmopt.io/slice", "slice"),
    ("vlmopt.io/variant", "variant"),
    ("app.kubernetes.io/instance", "replica_group"),
)


def _meta_label(label: str) -> str:
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def _kubernetes_scrape_configs(settings: DeploySettings) -> list[dict]:
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
            *({"source_labels": [_meta_label(label)], "target_label": target} for label, target in POD_LABELS),
            # The autoscaler's query and prometheus-adapter match on these two.
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


def _static_scrape_configs(plan: Plan, settings: DeploySettings) -> list[dict]:
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


def scrape_config(
    plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS, kubernetes: bool = True, rule_file: str = RULES_FILE
) -> dict:
    """Kubernetes service discovery (pods of the bundle's Deployments, the GPU Operator's DCGM exporter), or static
    targets for replicas run as processes on hosts. Both give every series the labels the rules use."""
    jobs = _kubernetes_scrape_configs(settings) if kubernetes else _static_scrape_configs(plan, settings)
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [rule_file],
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


def _load_rules() -> list[dict]:
    return [
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
                "description": "Load is above what the running replicas sustain; the autoscaler should be adding "
                "replicas.",
            },
        },
        {
            # A replica whose process is up but whose /metrics fails (hung engine). Deleted pods (spot) vanish from
            # discovery instead: the availability rules below catch those.
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


def planned_replicas(plan: Plan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for group in replica_groups(plan):
        counts[group.service] = counts.get(group.service, 0) + group.replicas
    return counts


def _static_availability_rules(plan: Plan) -> list[dict]:
    """VMs: static targets stay listed when their host is gone, so counting `up == 1` sees every loss."""
    rules = []
    for service, planned in planned_replicas(plan).items():
        rules.append(
            {
                "alert": "VllmReplicasBelowPlan",
                "expr": f'(count(up{{job="vllm",service="{service}"}} == 1) or vector(0)) < {planned}',
                "for": "5m",
                "labels": {"severity": "page", "service": service},
                "annotations": {
                    "summary": f"{service}: fewer than the {planned} replicas the plan bought are serving",
                    "description": "Capacity is below what the SLO was sized for; replace the lost replicas.",
                },
            }
        )
    return rules


def kubernetes_availability_rules(plan: Plan, deployments: dict[str, list[tuple[str, int]]], namespace: str) -> list:
    """kube-state-metrics: available vs desired per Deployment, and per service vs the plan's floor.
    `deployments`: service -> [(Deployment name, planned replicas)]."""
    rules = []
    names = [name for groups in deployments.values() for name, _ in groups]
    matcher = f'namespace="{namespace}",deployment=~"{"|".join(names)}"'
    rules.append(
        {
            "alert": "VllmDeploymentUnavailable",
            "expr": (
                f"kube_deployment_status_replicas_available{{{matcher}}} "
                f"< kube_deployment_spec_replicas{{{matcher}}}"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.deployment }}: fewer replicas available than desired for 10 minutes",
                "description": "Pods are pending (no free slice, spot capacity gone) or failing to start.",
            },
        }
    )
    for service, groups in deployments.items():
        planned = sum(n for _, n in groups)
        group_matcher = f'namespace="{namespace}",deployment=~"{"|".join(name for name, _ in groups)}"'
        rules.append(
            {
                "alert": "VllmReplicasBelowPlan",
                "expr": (
                    f"(sum(kube_deployment_status_replicas_available{{{group_matcher}}}) or vector(0)) < {planned}"
                ),
                "for": "5m",
                "labels": {"severity": "page", "service": service},
                "annotations": {
                    "summary": f"{service}: fewer than the {planned} replicas the plan bought are available",
                    "description": "Capacity is below what the SLO was sized for (spot interruptions, failed pods).",
                },
            }
        )
    return rules


def alert_rules(plan: Plan, availability: list[dict] | None = None) -> dict:
    """SLO, load and health rules; `availability` defaults to the VM (static target) rules."""
    extra = _static_availability_rules(plan) if availability is None else availability
    return {"groups": [{"name": f"vlmopt-{plan.name}", "rules": [*_slo_rules(plan), *_load_rules(), *extra]}]}


def pod_monitor(settings: DeploySettings) -> dict:
    """Prometheus Operator PodMonitor with the same labels as the plain scrape config (and `job="vllm"`)."""
    relabelings = [
        {"sourceLabels": [_meta_label(label)], "targetLabel": target} for label, target in POD_LABELS
    ]
    relabelings.append({"targetLabel": "job", "replacement": "vllm"})
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": "vlmopt-vllm",
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "vlmopt", **settings.prometheus_selector_labels},
        },
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "vlmopt", "app.kubernetes.io/name": "vllm"}},
            "namespaceSelector": {"matchNames": [settings.namespace]},
            "podMetricsEndpoints": [
                {"port": "http", "path": "/metrics", "interval": "15s", "relabelings": relabelings}
            ],
        },
    }


def prometheus_rule(plan: Plan, rules: dict, settings: DeploySettings) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": f"vlmopt-{label_value(plan.name)}",
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "vlmopt", **settings.prometheus_selector_labels},
        },
        "spec": rules,
    }


def emit_cluster_monitoring(plan: Plan, cluster, settings: DeploySettings) -> dict[str, str]:
    deployments: dict[str, list[tuple[str, int]]] = {}
    for g in cluster.groups:
        deployments.setdefault(g.service, []).append((g.name, g.replicas))
    cluster_plan = plan.model_copy(update={"node_groups": [p.node_group for p in cluster.pools]})
    rules = alert_rules(cluster_plan, kubernetes_availability_rules(plan, deployments, settings.namespace))
    folder = f"{cluster.folder}/{MONITORING_DIR}"
    header = [f"{GENERATED_BY} ({plan.name}); check with promtool check config / check rules"]
    return {
        f"{folder}/prometheus.yml": dump_yaml(scrape_config(plan, settings, kubernetes=True), header),
        f"{folder}/{RULES_FILE}": dump_yaml(rules, header),
        f"{folder}/podmonitor.yaml": dump_yaml_documents(
            [pod_monitor(settings)], [f"{GENERATED_BY}: Prometheus Operator; kubectl apply -f <this file>"]
        ),
        f"{folder}/prometheusrule.yaml": dump_yaml_documents(
            [prometheus_rule(plan, rules, settings)],
            [f"{GENERATED_BY}: Prometheus Operator; kubectl apply -f <this file>"],
        ),
    }


def emit_prometheus(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> dict[str, str]:
    """VMs / fleet processes: static targets and up-based availability."""
    header = [f"{GENERATED_BY} ({plan.name}); check with promtool check config / check rules"]
    return {
        f"{PROMETHEUS_DIR}/prometheus-static.yml": dump_yaml(scrape_config(plan, settings, kubernetes=False), header),
        f"{PROMETHEUS_DIR}/{RULES_FILE}": dump_yaml(alert_rules(plan), header),
    }
