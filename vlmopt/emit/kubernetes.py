"""Kubernetes objects per cluster: namespace, model storage, weight download, and per service a pool Service (every
replica of the service: spot and on-demand, every variant), A/B arm Services, and per Deployment group a Deployment
and a PodDisruptionBudget (plus an HPA when autoscaling runs through prometheus-adapter).

Wiring: device plugin `mixed` MIG strategy (one `nvidia.com/mig-<profile>` resource per profile), placement from
platform labels only (platform.py), sizes from the instance (sizing.py), timing from the SLO (policy.py).
docs/deploy-bundle.md#kubernetes. Secrets are only ever `secretKeyRef`s.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from vlmopt.schemas import GpuCatalog, Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import GENERATED_BY, MODELS_MOUNT, EmitError, dump_yaml, dump_yaml_documents, k8s_name, label_value
from .clusters import Cluster, DeployGroup
from .groups import EngineConfig, container_model_path, mig_resource_name
from .mig_parted import node_group_mig_config
from .platform import GPU_PRODUCT, GPU_TAINT, MIG_CONFIG, SPOT_TAINT, ZONE, capacity_terms, gpu_products
from .sizing import PodSize
from .weights import WeightSource, fetch_step, wait_step

PART_OF = "app.kubernetes.io/part-of"
INSTANCE = "app.kubernetes.io/instance"
SERVICE_LABEL = "vlmopt.io/service"
PLAN_LABEL = "vlmopt.io/plan"
MARKET_LABEL = "vlmopt.io/market"
SLICE_LABEL = "vlmopt.io/slice"
VARIANT_LABEL = "vlmopt.io/variant"
ARM_LABEL = "vlmopt.io/arm"
# vLLM's queue gauge; the HPA path renames it (custom-metric names cannot carry ':').
QUEUE_SERIES = "vllm:num_requests_waiting"
HPA_QUEUE_METRIC = "vllm_num_requests_waiting"
STARTUP_BUDGET_S = 1200  # weight loading and compilation; the download runs before, in an init container

# What each CSI provisioner can bind: block devices attach to one node, file systems to many.
PROVISIONER_ACCESS = {
    "ebs.csi.aws.com": {"ReadWriteOnce", "ReadWriteOncePod"},
    "pd.csi.storage.gke.io": {"ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany"},
    "efs.csi.aws.com": {"ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany"},
    "filestore.csi.storage.gke.io": {"ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany"},
}
FILESTORE_MIN_GIB = 1024  # the standard (basic HDD) tier's smallest instance


def market_value(market: str) -> str:
    return market.replace("_", "-")


def selector(group: DeployGroup) -> dict[str, str]:
    return {INSTANCE: group.name, PART_OF: "vlmopt"}


def pod_labels(plan: Plan, group: DeployGroup) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        PART_OF: "vlmopt",
        INSTANCE: group.name,
        SERVICE_LABEL: label_value(group.service),
        PLAN_LABEL: label_value(plan.name),
        MARKET_LABEL: market_value(group.market),
        SLICE_LABEL: label_value(group.engine.slice),
        VARIANT_LABEL: label_value(group.variant),
        ARM_LABEL: group.arm,
    }


def gpu_node_affinity(
    cloud: str | None, market: str, products: set[str], mig_configs: list[str] | None = None
) -> dict[str, Any]:
    """Required node affinity on platform labels only: the GPU product (GFD), the market's capacity label and,
    when given, the mig-parted config the node pool sets (`mig_configs`)."""
    common = [{"key": GPU_PRODUCT, "operator": "In", "values": sorted(products)}]
    if mig_configs:
        common.append({"key": MIG_CONFIG, "operator": "In", "values": sorted(mig_configs)})
    terms = [{"matchExpressions": common + extra} for extra in capacity_terms(cloud, market)]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def group_gpu_products(group: DeployGroup, catalog: GpuCatalog) -> set[str]:
    products: set[str] = set()
    for ng in group.node_groups:
        products.update(gpu_products(catalog.get(ng.gpu)))
    return products


def _affinity(cluster: Cluster, group: DeployGroup, catalog: GpuCatalog) -> dict[str, Any]:
    configs = sorted({node_group_mig_config(ng) for ng in group.node_groups}) if group.engine.is_mig else None
    return gpu_node_affinity(cluster.cloud, group.market, group_gpu_products(group, catalog), configs)


def gpu_tolerations(cloud: str | None, market: str) -> list[dict[str, str]]:
    """The GPU taint always; the spot taint the bundle's spot pools carry on this cloud."""
    tolerations = [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}]
    if market == "spot" and cloud in SPOT_TAINT:
        taint = SPOT_TAINT[cloud]
        tolerations.append({"key": taint["key"], "operator": "Equal", "value": taint["value"], "effect": "NoSchedule"})
    return tolerations


def _tolerations(cluster: Cluster, group: DeployGroup) -> list[dict[str, str]]:
    return gpu_tolerations(cluster.cloud, group.market)


def secret_env(name: str, secret: str, key: str, optional: bool) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": optional}}}


def _weights_gib(group: DeployGroup) -> float:
    for ng in group.node_groups:
        for r in ng.gpu_layout.replicas:
            if r.memory_gib and "weights" in r.memory_gib and r.variant == group.engine.variant:
                return r.memory_gib["weights"]
    return 40.0


def per_pod_volume_gib(group: DeployGroup, settings: DeploySettings) -> int:
    """The checkpoint plus a fifth for the hub download's temporary files, +5 GiB."""
    if settings.storage.size_gib:
        return settings.storage.size_gib
    return math.ceil(_weights_gib(group) * 1.2 + 5)


def shared_volume_gib(cluster: Cluster, settings: DeploySettings) -> int:
    if settings.storage.size_gib:
        return settings.storage.size_gib
    per_model: dict[str, float] = {}
    for g in cluster.groups:
        per_model[g.weights.model] = _weights_gib(g)
    return math.ceil(sum(per_model.values()) * 1.5 + 20)


def storage_class_name(cluster: Cluster, settings: DeploySettings) -> str | None:
    """The class claims use: the user's for this cloud, else the one the bundle defines (None: cluster default)."""
    chosen = settings.storage.storage_class.get(cluster.cloud or "default")
    if chosen:
        return chosen
    if cluster.cloud in ("aws", "gcp"):
        return "vlmopt-rwx" if settings.storage.mode == "shared" else "vlmopt-rwo"
    if settings.storage.mode == "shared":
        raise EmitError(
            "storage.mode shared on a fleet cluster needs deploy.storage.storage_class.default (a ReadWriteMany class)"
        )
    return None


def storage_class_object(cluster: Cluster, settings: DeploySettings) -> dict[str, Any] | None:
    if settings.storage.storage_class.get(cluster.cloud or "default") or cluster.cloud not in ("aws", "gcp"):
        return None
    shared = settings.storage.mode == "shared"
    if cluster.cloud == "aws" and shared:
        if settings.storage.efs_file_system_id is None:
            raise EmitError(
                f"{cluster.key}: storage.mode shared needs deploy.storage.efs_file_system_id (an EFS file system "
                "the EFS CSI driver creates access points in) or deploy.storage.storage_class.aws"
            )
        provisioner = "efs.csi.aws.com"
        # Access points owned by the pods' UID/GID (they run as 1000).
        parameters = {
            "provisioningMode": "efs-ap",
            "fileSystemId": settings.storage.efs_file_system_id,
            "directoryPerms": "750",
            "uid": "1000",
            "gid": "1000",
        }
    elif cluster.cloud == "aws":
        provisioner, parameters = "ebs.csi.aws.com", {"type": "gp3"}
    elif shared:
        provisioner, parameters = "filestore.csi.storage.gke.io", {"tier": "standard", "network": "default"}
    else:
        provisioner, parameters = "pd.csi.storage.gke.io", {"type": "pd-balanced"}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": storage_class_name(cluster, settings), "labels": {PART_OF: "vlmopt"}},
        "provisioner": provisioner,
        "parameters": parameters,
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": True,
        # Block volumes must be created in the zone the pod lands in.
        "volumeBindingMode": "WaitForFirstConsumer",
    }


MODEL_PVC = "vlmopt-models"


def model_volume_claim(cluster: Cluster, settings: DeploySettings) -> dict[str, Any]:
    size = shared_volume_gib(cluster, settings)
    if cluster.cloud == "gcp" and not settings.storage.storage_class.get("gcp"):
        size = max(size, FILESTORE_MIN_GIB)
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": f"{size}Gi"}}}
    name = storage_class_name(cluster, settings)
    if name:
        spec["storageClassName"] = name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": MODEL_PVC, "namespace": settings.namespace, "labels": {PART_OF: "vlmopt"}},
        "spec": spec,
    }


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def download_env(settings: DeploySettings) -> list[dict[str, Any]]:
    hf = settings.secrets.hf_token
    return [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{MODELS_MOUNT}/.hf-home"},
        secret_env("HF_TOKEN", hf.name, hf.key, optional=True),
    ]


def weights_init_container(source: WeightSource, settings: DeploySettings) -> dict[str, Any]:
    """The init step that puts the checkpoint under /models (per-pod download, or a wait for the shared one)."""
    if settings.storage.mode == "shared":
        image, command = settings.image, wait_step(source)
    else:
        image, command = fetch_step(source, settings.image)
    return {
        "name": "weights",
        "image": image,
        "command": command,
        "env": download_env(settings),
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        "securityContext": dict(RESTRICTED_CONTAINER),
    }


def vllm_args(group: DeployGroup) -> list[str]:
    args = group.engine.server_args.model_copy(update={"model": container_model_path(group.model)})
    return [*args.to_cli(), *group.frontend]


def engine_container_env(engine_env: dict[str, str]) -> list[dict[str, Any]]:
    """The engine's own variables, then where caches go and the hub switched off."""
    return [
        *({"name": k, "value": v} for k, v in sorted(engine_env.items())),
        # readOnlyRootFilesystem: caches go to the writable volumes.
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "HF_HOME", "value": "/tmp/hf-home"},
        # Weights are on the volume before the server starts: never reach the hub from a serving pod.
        {"name": "HF_HUB_OFFLINE", "value": "1"},
    ]


def gpu_resource(engine: EngineConfig) -> str:
    """`nvidia.com/mig-<profile>` on a slice (device plugin, mixed strategy), else `nvidia.com/gpu`."""
    return mig_resource_name(engine.slice) if engine.is_mig else "nvidia.com/gpu"


def engine_resources(engine: EngineConfig, size: PodSize) -> dict[str, Any]:
    gpu = gpu_resource(engine)
    return {
        "requests": {"cpu": size.cpu_quantity, "memory": size.memory_quantity, gpu: "1"},
        # No CPU limit: throttling shows up as latency; memory limit = request so eviction is predictable.
        "limits": {"memory": size.memory_quantity, gpu: "1"},
    }


def _container(group: DeployGroup, settings: DeploySettings) -> dict[str, Any]:
    engine = group.engine
    env = engine_container_env(engine.env)
    if settings.secrets.require_api_key:
        key = settings.secrets.api_key
        env.append(secret_env("VLLM_API_KEY", key.name, key.key, optional=False))
    probe = {"path": "/health", "port": "http"}
    container: dict[str, Any] = {
        "name": "vllm",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["vllm", "serve"],
        "args": vllm_args(group),
        "ports": [{"name": "http", "containerPort": settings.port, "protocol": "TCP"}],
        "env": env,
        "resources": engine_resources(engine, group.size),
        "volumeMounts": engine_volume_mounts(),
        "startupProbe": {
            "httpGet": probe, "periodSeconds": 10, "failureThreshold": STARTUP_BUDGET_S // 10, "timeoutSeconds": 5,
        },
        "readinessProbe": {"httpGet": probe, "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 5},
        "livenessProbe": {"httpGet": probe, "periodSeconds": 10, "failureThreshold": 6, "timeoutSeconds": 5},
        "securityContext": dict(RESTRICTED_CONTAINER),
    }
    if group.shutdown.prestop_s:
        # Load balancers and kube-proxy drop the pod's endpoint asynchronously; keep serving until they have,
        # then SIGTERM starts vLLM's drain (--shutdown-timeout).
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(group.shutdown.prestop_s)]}}}
    return container


def engine_volume_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "models", "mountPath": MODELS_MOUNT, "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def pod_volumes(group: DeployGroup, cluster: Cluster, settings: DeploySettings) -> list[dict[str, Any]]:
    """The checkpoint volume, a memory-backed /dev/shm inside the pod's memory limit, and a writable /tmp."""
    return [
        models_volume(group, cluster, settings),
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": group.size.shm_quantity}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}},
    ]


def models_volume(group: DeployGroup, cluster: Cluster, settings: DeploySettings) -> dict[str, Any]:
    if settings.storage.mode == "shared":
        return {"name": "models", "persistentVolumeClaim": {"claimName": MODEL_PVC}}
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{per_pod_volume_gib(group, settings)}Gi"}},
    }
    name = storage_class_name(cluster, settings)
    if name:
        spec["storageClassName"] = name
    # A generic ephemeral volume: created with the pod in its zone, deleted with it.
    return {
        "name": "models",
        "ephemeral": {"volumeClaimTemplate": {"metadata": {"labels": {PART_OF: "vlmopt"}}, "spec": spec}},
    }


def deployment(
    plan: Plan, cluster: Cluster, group: DeployGroup, settings: DeploySettings, catalog: GpuCatalog
) -> dict[str, Any]:
    labels = pod_labels(plan, group)
    engine = group.engine
    annotations = {
        "vlmopt.io/capacity-rps-per-replica": f"{engine.capacity_rps:g}",
        "vlmopt.io/capacity-source": engine.capacity_provenance.label(),
        "vlmopt.io/node-groups": ",".join(ng.name for ng in group.node_groups),
        "vlmopt.io/sizing": group.size.derivation,
        "vlmopt.io/grace": group.shutdown.derivation,
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": group.shutdown.grace_s,
        "securityContext": dict(POD_SECURITY),
        "affinity": _affinity(cluster, group, catalog),
        "tolerations": _tolerations(cluster, group),
        # Spot interruptions are correlated within a zone (docs/cost-model.md): spread replicas over zones.
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": ZONE,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(group)},
            }
        ],
        "initContainers": [weights_init_container(group.weights, settings)],
        "containers": [_container(group, settings)],
        "volumes": pod_volumes(group, cluster, settings),
    }
    if settings.storage.service_account:
        pod_spec["serviceAccountName"] = settings.storage.service_account
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(group)},
        # Each replica holds a whole slice and the plan buys exactly the slices it needs: a surge pod would find no
        # free slice, so replace one pod at a time instead.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
    }
    if not _autoscaled(group, settings):
        # Under an autoscaler the replica count is its to set; a `replicas` field would fight it on every apply.
        spec = {"replicas": group.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": group.name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {"vlmopt.io/min-replicas": str(group.replicas)},
        },
        "spec": spec,
    }


def _autoscaled(group: DeployGroup, settings: DeploySettings) -> bool:
    return settings.autoscaling.engine != "none" and group.max_replicas > group.replicas


def pod_disruption_budget(plan: Plan, group: DeployGroup, settings: DeploySettings) -> dict:
    """Voluntary disruptions (drains, MIG re-partitioning) take one pod at a time. With a single replica that is the
    whole service: the README says so instead of claiming availability (readme.py)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": group.name, "namespace": settings.namespace, "labels": pod_labels(plan, group)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(group)}},
    }


def horizontal_pod_autoscaler(plan: Plan, group: DeployGroup, settings: DeploySettings) -> dict:
    a = settings.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": group.name, "namespace": settings.namespace, "labels": pod_labels(plan, group)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": group.name},
            "minReplicas": group.replicas,
            "maxReplicas": group.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": HPA_QUEUE_METRIC},
                        "target": {"type": "AverageValue", "averageValue": f"{a.waiting_requests_per_replica:g}"},
                    },
                }
            ],
            "behavior": scaling_behavior(settings),
        },
    }


def scaling_behavior(settings: DeploySettings) -> dict[str, Any]:
    return {
        "scaleUp": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
        # A new replica takes minutes to load: keep it before giving it back.
        "scaleDown": {"stabilizationWindowSeconds": settings.autoscaling.scale_down_delay_s},
    }


def queue_query(group: DeployGroup, settings: DeploySettings) -> str:
    return f'sum({QUEUE_SERIES}{{namespace="{settings.namespace}",replica_group="{group.name}"}})'


def scaled_object(plan: Plan, group: DeployGroup, settings: DeploySettings) -> dict:
    """KEDA ScaledObject: the group's total waiting requests / per-replica target = replicas wanted
    (https://keda.sh/docs/latest/scalers/prometheus/)."""
    a = settings.autoscaling
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": group.name, "namespace": settings.namespace, "labels": pod_labels(plan, group)},
        "spec": {
            "scaleTargetRef": {"name": group.name},
            "minReplicaCount": group.replicas,
            "maxReplicaCount": group.max_replicas,
            "pollingInterval": 15,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": scaling_behavior(settings)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": settings.prometheus_url,
                        "query": queue_query(group, settings),
                        "threshold": f"{a.waiting_requests_per_replica:g}",
                    },
                }
            ],
        },
    }


def prometheus_adapter_values(settings: DeploySettings) -> dict:
    """prometheus-adapter Helm values: where Prometheus is, and vLLM's queue gauge as a per-pod custom metric."""
    url = urlsplit(settings.prometheus_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return {
        "prometheus": {"url": f"{url.scheme}://{url.hostname}", "port": port, "path": url.path.rstrip("/")},
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
        },
    }


def service_object(plan: Plan, service: str, settings: DeploySettings, arm: str | None = None) -> dict:
    """The pool Service (arm None) selects every replica of the service, so when spot pods or a whole variant go,
    the remaining endpoints take the traffic; arm Services select one side of an A/B split."""
    selector_labels = {SERVICE_LABEL: label_value(service), PLAN_LABEL: label_value(plan.name), PART_OF: "vlmopt"}
    if arm:
        selector_labels[ARM_LABEL] = arm
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(service, arm),
            "namespace": settings.namespace,
            "labels": dict(selector_labels),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels,
            "ports": [{"name": "http", "port": settings.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def service_name(service: str, arm: str | None = None) -> str:
    return k8s_name(service, arm or "")


def namespace_object(plan: Plan, settings: DeploySettings) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.namespace, "labels": {PART_OF: "vlmopt", PLAN_LABEL: label_value(plan.name)}},
    }


def download_job(source: WeightSource, settings: DeploySettings) -> dict:
    """Shared volume: one Job per checkpoint fills it once; pods wait for its completion marker."""
    image, command = fetch_step(source, settings.image)
    pod: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,
        "securityContext": dict(POD_SECURITY),
        "containers": [
            {
                "name": "download",
                "image": image,
                "command": command,
                "env": download_env(settings),
                "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                "securityContext": dict(RESTRICTED_CONTAINER),
            }
        ],
        "volumes": [
            {"name": "models", "persistentVolumeClaim": {"claimName": MODEL_PVC}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
        ],
    }
    if settings.storage.service_account:
        pod["serviceAccountName"] = settings.storage.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": k8s_name("weights", source.model),
            "namespace": settings.namespace,
            "labels": {PART_OF: "vlmopt"},
        },
        "spec": {"backoffLimit": 6, "template": {"metadata": {"labels": {PART_OF: "vlmopt"}}, "spec": pod}},
    }


def service_documents(plan: Plan, cluster: Cluster, service: str, settings: DeploySettings, catalog) -> list[dict]:
    groups = [g for g in cluster.groups if g.service == service]
    docs: list[dict] = [service_object(plan, service, settings)]
    if any(g.arm == "b" for g in groups):
        docs += [service_object(plan, service, settings, "a"), service_object(plan, service, settings, "b")]
    for group in groups:
        docs += [deployment(plan, cluster, group, settings, catalog), pod_disruption_budget(plan, group, settings)]
        if settings.autoscaling.engine == "hpa" and _autoscaled(group, settings):
            docs.append(horizontal_pod_autoscaler(plan, group, settings))
    return docs


def emit_cluster_kubernetes(
    plan: Plan, cluster: Cluster, settings: DeploySettings, catalog: GpuCatalog
) -> dict[str, str]:
    folder = f"{cluster.folder}/kubernetes"
    header = [f"{GENERATED_BY} ({plan.name}); kubectl apply -f <this file>"]
    files = {f"{folder}/00-namespace.yaml": dump_yaml_documents([namespace_object(plan, settings)], header)}
    storage: list[dict] = []
    sc = storage_class_object(cluster, settings)
    if sc is not None:
        storage.append(sc)
    if settings.storage.mode == "shared":
        storage.append(model_volume_claim(cluster, settings))
        files[f"{folder}/02-model-download.yaml"] = dump_yaml_documents(
            [download_job(w, settings) for w in cluster.weights], header
        )
    else:
        storage_class_name(cluster, settings)  # raises on a fleet cluster that cannot serve the mode
    if storage:
        files[f"{folder}/01-model-storage.yaml"] = dump_yaml_documents(storage, header)
    for service in cluster.services:
        files[f"{folder}/service-{k8s_name(service)}.yaml"] = dump_yaml_documents(
            service_documents(plan, cluster, service, settings, catalog), header
        )
    scaled = [g for g in cluster.groups if _autoscaled(g, settings)]
    if settings.autoscaling.engine == "keda" and scaled:
        files[f"{cluster.folder}/autoscaling/keda-scaledobjects.yaml"] = dump_yaml_documents(
            [scaled_object(plan, g, settings) for g in scaled],
            [f"{GENERATED_BY} ({plan.name}); needs KEDA 2.x: kubectl apply -f <this file>"],
        )
    elif settings.autoscaling.engine == "hpa" and scaled:
        files[f"{cluster.folder}/autoscaling/prometheus-adapter-values.yaml"] = dump_yaml(
            prometheus_adapter_values(settings),
            header=[f"{GENERATED_BY}: helm install prometheus-adapter prometheus-community/prometheus-adapter -f "
                    "<this file>"],
        )
    return files
