"""Kubernetes objects per service: Deployment + HorizontalPodAutoscaler + PodDisruptionBudget per replica group,
one Service per service; plus the namespace, the model volume and node-pool hints.

Wiring per research/planning.md §4 (device plugin `mixed` strategy: one `nvidia.com/mig-<profile>` resource per
profile; mig-manager label `nvidia.com/mig.config`) and §5.2 (vLLM Deployment pattern). Secrets are only ever
`secretKeyRef`s.
"""

from __future__ import annotations

import math
import re
from typing import Any

from vlmopt.schemas import NodeGroup, Plan

from ._common import DEFAULT_SETTINGS, GENERATED_BY, EmitSettings, dump_yaml, dump_yaml_documents, k8s_name, label_value
from .groups import (
    VLLM_MODULE,
    ReplicaGroup,
    container_model_path,
    is_mig_slice,
    mig_resource_name,
    replica_groups,
    services_in_order,
)
from .mig_parted import MIG_CONFIG_LABEL, node_group_mig_config

K8S_DIR = "kubernetes"
CLUSTER_DIR = "cluster"

PART_OF = "app.kubernetes.io/part-of"
INSTANCE = "app.kubernetes.io/instance"
SERVICE_LABEL = "vlmopt.io/service"
PLAN_LABEL = "vlmopt.io/plan"
MARKET_LABEL = "vlmopt.io/market"
GPU_LABEL = "vlmopt.io/gpu"
SLICE_LABEL = "vlmopt.io/slice"
SPOT_TAINT_KEY = "vlmopt.io/spot"
ZONE_KEY = "topology.kubernetes.io/zone"
# vLLM's queue gauge, renamed by the Prometheus adapter because custom-metric names cannot carry ':'
# (cluster/prometheus-adapter-values.yaml; metric names from research/benchmark.md §2).
HPA_QUEUE_METRIC = "vllm_num_requests_waiting"
QUEUE_SERIES = "vllm:num_requests_waiting"

# Spot taints the managed clouds put on spot node pools themselves, so pods must tolerate them there.
_CLOUD_SPOT_TAINTS = {
    "azure": ("kubernetes.azure.com/scalesetpriority", "spot"),
    "gcp": ("cloud.google.com/gke-spot", "true"),
}


def market_value(market: str) -> str:
    return market.replace("_", "-")


def node_labels(group: NodeGroup) -> dict[str, str]:
    """Labels vlmopt's Deployments select on; put them on the node pool of this node group."""
    return {
        GPU_LABEL: label_value(group.gpu),
        MARKET_LABEL: market_value(group.market),
        MIG_CONFIG_LABEL: node_group_mig_config(group),
    }


def node_taints(group: NodeGroup) -> list[dict[str, str]]:
    if group.market != "spot":
        return []
    return [{"key": SPOT_TAINT_KEY, "value": "true", "effect": "NoSchedule"}]


def _pod_labels(plan: Plan, group: ReplicaGroup) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        PART_OF: "vlmopt",
        INSTANCE: group.name,
        SERVICE_LABEL: label_value(group.service),
        PLAN_LABEL: label_value(plan.name),
        MARKET_LABEL: market_value(group.market),
        SLICE_LABEL: label_value(group.engine.slice),
    }


def _compute_slices(slice_name: str) -> int:
    match = re.match(r"(\d+)g\.", slice_name)
    return int(match.group(1)) if match else 7


def _host_resources(slice_name: str) -> dict[str, str]:
    """CPU and host RAM per replica: 2 cores per MIG compute slice (8 for a whole GPU) feed the tokenizer and image
    preprocessing; host RAM covers loading the weights: about half the slice's memory, at least 8 GiB."""
    if not is_mig_slice(slice_name):
        return {"cpu": "8", "memory": "32Gi"}
    mem = re.search(r"\.(\d+)gb", slice_name)
    gib = max(8, math.ceil(int(mem.group(1)) / 2)) if mem else 16
    return {"cpu": str(2 * _compute_slices(slice_name)), "memory": f"{gib}Gi"}


def _affinity(group: ReplicaGroup) -> dict[str, Any]:
    expressions = [
        {"key": MARKET_LABEL, "operator": "In", "values": [market_value(group.market)]},
        {"key": GPU_LABEL, "operator": "In", "values": [label_value(group.engine.gpu)]},
    ]
    if group.engine.is_mig:
        configs = sorted({node_group_mig_config(ng) for ng in group.node_groups})
        expressions.append({"key": MIG_CONFIG_LABEL, "operator": "In", "values": configs})
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": expressions}]}
        }
    }


def _tolerations(group: ReplicaGroup) -> list[dict[str, str]]:
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    if group.market == "spot":
        tolerations.append({"key": SPOT_TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
        for cloud in sorted({(ng.cloud or "").lower() for ng in group.node_groups}):
            if cloud in _CLOUD_SPOT_TAINTS:
                key, value = _CLOUD_SPOT_TAINTS[cloud]
                tolerations.append({"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"})
    return tolerations


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    # optional: a public model needs no token and an open endpoint needs no key; the pod still starts.
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}


def _container(group: ReplicaGroup, settings: EmitSettings) -> dict[str, Any]:
    engine = group.engine
    args = engine.server_args.model_copy(update={"model": container_model_path(engine.server_args.model, settings)})
    gpu_resource = mig_resource_name(engine.slice) if engine.is_mig else "nvidia.com/gpu"
    host = _host_resources(engine.slice)
    env = [{"name": k, "value": v} for k, v in sorted(engine.env.items())]
    env += [
        # readOnlyRootFilesystem: caches go to the writable volumes.
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "HF_HOME", "value": f"{settings.models_mount}/hf-cache"},
        _secret_env("HF_TOKEN", settings.hf_token_secret, settings.hf_token_key),
        _secret_env("VLLM_API_KEY", settings.api_key_secret, settings.api_key_key),
    ]
    probe_get = {"path": "/health", "port": "http"}
    return {
        "name": "vllm",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", VLLM_MODULE],
        "args": args.to_cli(),
        "ports": [{"name": "http", "containerPort": settings.port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {**host, gpu_resource: "1"},
            # No CPU limit: throttling shows up as latency; memory limit = request so eviction is predictable.
            "limits": {"memory": host["memory"], gpu_resource: "1"},
        },
        "volumeMounts": [
            {"name": "models", "mountPath": settings.models_mount},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        # Loading weights and compiling can take many minutes: startup allows 20 min before liveness starts.
        "startupProbe": {"httpGet": probe_get, "periodSeconds": 10, "failureThreshold": 120, "timeoutSeconds": 5},
        "readinessProbe": {"httpGet": probe_get, "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": probe_get, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def deployment(plan: Plan, group: ReplicaGroup, settings: EmitSettings = DEFAULT_SETTINGS) -> dict[str, Any]:
    labels = _pod_labels(plan, group)
    selector = {INSTANCE: group.name, PART_OF: "vlmopt"}
    engine = group.engine
    annotations = {
        "vlmopt.io/capacity-rps-per-replica": f"{engine.capacity_rps:g}",
        "vlmopt.io/capacity-source": engine.capacity_provenance.label(),
        "vlmopt.io/node-groups": ",".join(ng.name for ng in group.node_groups),
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # AWS gives a spot instance 2 minutes' notice (research/planning.md §7): drain in-flight streams within it.
        "terminationGracePeriodSeconds": 110,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": _affinity(group),
        "tolerations": _tolerations(group),
        # Spot interruptions are correlated within a zone (research/planning.md §7): spread replicas over zones.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": ZONE_KEY,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
        "containers": [_container(group, settings)],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": settings.model_pvc}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": group.name, "namespace": settings.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": group.replicas,
            "selector": {"matchLabels": selector},
            # Never drop below the planned count while rolling: surge one pod, take none away first.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def horizontal_pod_autoscaler(plan: Plan, group: ReplicaGroup, settings: EmitSettings = DEFAULT_SETTINGS) -> dict:
    """The plan sizes each group for peak x (1 + headroom), so that is the floor; bursts beyond it scale out on the
    queue while the cluster has free slices."""
    max_replicas = max(group.replicas + 1, math.ceil(group.replicas * settings.hpa_max_replicas_factor))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": group.name, "namespace": settings.namespace, "labels": _pod_labels(plan, group)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": group.name},
            "minReplicas": group.replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": HPA_QUEUE_METRIC},
                        "target": {"type": "AverageValue", "averageValue": str(settings.hpa_waiting_requests_target)},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 60,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
                # A new replica takes minutes to load: keep it 10 minutes before giving it back.
                "scaleDown": {"stabilizationWindowSeconds": 600},
            },
        },
    }


def pod_disruption_budget(plan: Plan, group: ReplicaGroup, settings: EmitSettings = DEFAULT_SETTINGS) -> dict:
    """Voluntary disruptions (drains, MIG re-partitioning, research/planning.md §8) take one pod at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": group.name, "namespace": settings.namespace, "labels": _pod_labels(plan, group)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {INSTANCE: group.name, PART_OF: "vlmopt"}}},
    }


def service_object(plan: Plan, service: str, settings: EmitSettings = DEFAULT_SETTINGS) -> dict:
    """One ClusterIP Service over every replica group of the service (spot and on-demand, all slice types)."""
    selector = {SERVICE_LABEL: label_value(service), PLAN_LABEL: label_value(plan.name), PART_OF: "vlmopt"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": k8s_name(service), "namespace": settings.namespace, "labels": dict(selector)},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": settings.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def namespace_object(plan: Plan, settings: EmitSettings) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.namespace, "labels": {PART_OF: "vlmopt", PLAN_LABEL: label_value(plan.name)}},
    }


def _model_storage_gib(plan: Plan) -> int:
    """Sum of the distinct (model, variant) weights the plan serves, x1.5 for the hub cache's copies, +20 GiB."""
    weights: dict[tuple[str, str], float] = {}
    for group in plan.node_groups:
        for r in group.gpu_layout.replicas:
            if r.memory_gib and "weights" in r.memory_gib:
                weights[(r.server_args.model, r.variant)] = r.memory_gib["weights"]
    if not weights:
        return 200
    return math.ceil(sum(weights.values()) * 1.5 + 20)


def model_volume_claim(plan: Plan, settings: EmitSettings) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": settings.model_pvc, "namespace": settings.namespace, "labels": {PART_OF: "vlmopt"}},
        "spec": {
            # Every replica mounts it: shared read access across nodes.
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": f"{_model_storage_gib(plan)}Gi"}},
        },
    }


def service_documents(plan: Plan, service: str, groups: list[ReplicaGroup], settings: EmitSettings) -> list[dict]:
    docs: list[dict] = [service_object(plan, service, settings)]
    for group in groups:
        docs += [
            deployment(plan, group, settings),
            horizontal_pod_autoscaler(plan, group, settings),
            pod_disruption_budget(plan, group, settings),
        ]
    return docs


def node_pool_hints(plan: Plan) -> dict:
    pools = []
    for group in plan.node_groups:
        labels = node_labels(group)
        taints = node_taints(group)
        pools.append(
            {
                "node_group": group.name,
                "gpu": group.gpu,
                "cloud": group.cloud,
                "region": group.region,
                "instance_type": group.instance_type,
                "market": group.market,
                "instances": group.instances,
                "gpus_per_instance": group.gpus_per_instance,
                "mig_layout": group.gpu_layout.mig_layout,
                "labels": labels,
                "taints": taints,
                "commands": [
                    "kubectl label node <node> " + " ".join(f"{k}={v}" for k, v in labels.items()) + " --overwrite",
                    *(f"kubectl taint node <node> {t['key']}={t['value']}:{t['effect']}" for t in taints),
                ],
            }
        )
    return {"plan": plan.name, "device_plugin_mig_strategy": "mixed", "node_pools": pools}


def prometheus_adapter_values() -> dict:
    """prometheus-adapter Helm values exposing vLLM's queue gauge as a per-pod custom metric for the HPA."""
    return {
        "rules": {
            "default": False,
            "custom": [
                {
                    "seriesQuery": f'{QUEUE_SERIES}{{namespace!="",pod!=""}}',
                    "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                    "name": {"matches": f"^{QUEUE_SERIES}$", "as": HPA_QUEUE_METRIC},
                    "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                }
            ],
        }
    }


def emit_kubernetes(plan: Plan, settings: EmitSettings = DEFAULT_SETTINGS) -> dict[str, str]:
    groups = replica_groups(plan, settings)
    header = [f"{GENERATED_BY} ({plan.name}); kubectl apply -f <this file>"]
    files = {
        f"{K8S_DIR}/00-namespace.yaml": dump_yaml_documents([namespace_object(plan, settings)], header),
        f"{K8S_DIR}/01-model-storage.yaml": dump_yaml_documents([model_volume_claim(plan, settings)], header),
    }
    for service in services_in_order(plan):
        own = [g for g in groups if g.service == service]
        if own:
            docs = service_documents(plan, service, own, settings)
            files[f"{K8S_DIR}/service-{k8s_name(service)}.yaml"] = dump_yaml_documents(docs, header)
    files[f"{CLUSTER_DIR}/node-pools.yaml"] = dump_yaml(
        node_pool_hints(plan), header=[f"{GENERATED_BY}: labels and taints each node pool needs (not a k8s object)"]
    )
    files[f"{CLUSTER_DIR}/prometheus-adapter-values.yaml"] = dump_yaml(
        prometheus_adapter_values(),
        header=[f"{GENERATED_BY}: helm install prometheus-adapter prometheus-community/prometheus-adapter -f <this>"],
    )
    return files
