"""Deploy settings: the choices a deploy bundle needs that are not part of the plan (image, namespace, storage, where
weights come from, VM hosts, autoscaling, gateway/mesh, A/B split, secret names, Prometheus).

Read from the workload's `deploy:` block or from `vlmopt plan --deploy-settings FILE`; every emitter in
`vlmopt/emit/` reads it (docs/deploy-bundle.md#deploy-settings lists each field and the file it changes).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .common import StrictModel

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_URI = re.compile(r"^(s3|gs)://[a-z0-9][a-z0-9._-]*(/.*)?$")
_HUB_ID = re.compile(r"^(hf://)?[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(f"{what} {value!r} is not a DNS-1123 label (lower-case letters, digits, '-', <= 63 chars)")
    return value


class SecretRef(StrictModel):
    """A Kubernetes Secret the pods read one key of; the bundle holds the name, never the value."""

    name: str
    key: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "secret name")


class SecretSettings(StrictModel):
    hf_token: SecretRef = Field(default_factory=lambda: SecretRef(name="vlmopt-hf-token", key="token"))
    api_key: SecretRef = Field(default_factory=lambda: SecretRef(name="vlmopt-api-key", key="key"))
    require_api_key: bool = Field(
        default=True,
        description="serve with VLLM_API_KEY (the secret must exist); false = open endpoint, no key passed anywhere",
    )


class StorageSettings(StrictModel):
    """Where the weights live on the cluster.

    per_pod: each pod gets its own volume (an ephemeral ReadWriteOnce volume, deleted with the pod) and an
    initContainer downloads the weights into it; works on any cluster with a block-storage CSI driver.
    shared: one ReadWriteMany volume (EFS on AWS, Filestore on GKE) filled once by a Job; pods wait for it.
    """

    mode: Literal["per_pod", "shared"] = "per_pod"
    storage_class: dict[str, str] = Field(
        default_factory=dict,
        description="cloud -> an existing StorageClass to use instead of the one the bundle defines (e.g. "
        "{'gcp': 'standard-rwx'}); 'default' for a cluster without a cloud (fleet)",
    )
    efs_file_system_id: str | None = Field(
        default=None, description="AWS shared mode: the EFS file system the EFS CSI driver provisions access points in"
    )
    size_gib: int | None = Field(default=None, ge=1, description="volume size; default from the plan's weights")
    bucket: dict[str, str] = Field(
        default_factory=dict,
        description="cloud -> s3:// or gs:// prefix holding local model folders (uploaded by weights/upload.sh)",
    )
    service_account: str | None = Field(
        default=None,
        description="ServiceAccount of the weight download steps (bucket read access via IRSA/EKS Pod Identity or "
        "GKE Workload Identity); None = the namespace's default",
    )

    @field_validator("bucket")
    @classmethod
    def _bucket_uris(cls, value: dict[str, str]) -> dict[str, str]:
        for cloud, uri in value.items():
            if not _URI.match(uri):
                raise ValueError(f"bucket[{cloud}]: {uri!r} is not an s3://bucket/prefix or gs://bucket/prefix URI")
        return value

    @field_validator("efs_file_system_id")
    @classmethod
    def _efs(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^fs-[0-9a-f]{8,40}$", value):
            raise ValueError(f"efs_file_system_id {value!r} is not an EFS id (fs-<hex>)")
        return value


class AutoscalingSettings(StrictModel):
    engine: Literal["keda", "hpa", "none"] = Field(
        default="keda",
        description="keda: ScaledObject with a Prometheus trigger; hpa: HorizontalPodAutoscaler via "
        "prometheus-adapter; none: fixed replicas",
    )
    waiting_requests_per_replica: float = Field(
        default=2.0, gt=0, description="vllm:num_requests_waiting per replica above which a replica is added"
    )
    max_replicas_factor: float = Field(
        default=2.0, ge=1.0, description="scale-out ceiling as a multiple of the planned replicas (node pools follow)"
    )
    scale_down_delay_s: int = Field(default=600, ge=0, description="a replica takes minutes to load: keep it this long")


class AbSplit(StrictModel):
    """Send `weight_percent` of one service's traffic to a challenger variant (same slices, another checkpoint)."""

    service: str
    variant: str = Field(description="the challenger's variant name, e.g. 'fp8'")
    model: str = Field(description="the challenger checkpoint: hub id, or s3://, gs:// URI, or a local folder")
    weight_percent: float = Field(gt=0, lt=100)


class TimeoutSettings(StrictModel):
    connect_s: float = Field(default=2.0, gt=0, le=30, description="TCP connect to a replica")
    output_tokens: int = Field(
        default=1024, ge=1, description="output length the request timeout allows for when the SLO has no e2el key"
    )
    request_factor: float = Field(default=3.0, ge=1.0, description="request timeout = factor x the SLO's e2e budget")
    retries: int = Field(default=2, ge=0, le=5, description="retries of requests that never reached a replica")
    prestop_s: int = Field(default=5, ge=0, le=60, description="time for load balancers to drop a terminating pod")


class DeploySettings(StrictModel):
    """Everything the bundle needs beyond the plan. Defaults are what docs/deploy-bundle.md describes."""

    image: str = Field(default="vllm/vllm-openai:v0.32.0", description="vLLM OpenAI server image (pinned)")
    namespace: str = "vlmopt"
    port: int = Field(default=8000, ge=1, le=65535)
    secrets: SecretSettings = Field(default_factory=SecretSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    models: dict[str, str] = Field(
        default_factory=dict,
        description="model as the plan names it (hub id or folder) -> where to fetch it: hub id, s3:// or gs:// URI",
    )
    replica_hosts: dict[str, list[str]] = Field(
        default_factory=dict, description="VMs: node group -> host name or address of each instance (nginx, prometheus)"
    )
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    gateway: Literal["gateway-api", "istio", "none"] = "gateway-api"
    gateway_ref: str = Field(default="vlmopt-gateway", description="parent Gateway (namespace/name or name)")
    hostnames: list[str] = Field(default_factory=list, description="HTTPRoute/VirtualService host names")
    ab: AbSplit | None = None
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="Prometheus the autoscaler queries (kube-prometheus-stack's service by default)",
    )
    cluster_name: str = Field(default="vlmopt", description="EKS/GKE cluster the node pools join")
    gcp_project: str | None = Field(default=None, description="GKE node-pool commands' --project (None: gcloud's)")
    prometheus_selector_labels: dict[str, str] = Field(
        default_factory=lambda: {"release": "kube-prometheus-stack"},
        description="labels the Prometheus Operator selects PodMonitors/PrometheusRules by (kube-prometheus-stack's)",
    )
    shm_gib: float = Field(default=2.0, gt=0, description="/dev/shm size per pod (inside the pod's memory limit)")
    mig_gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    node_reserve_cpu: float = Field(
        default=1.0, ge=0, description="cores per GPU node kept for daemonsets (GPU operator, CNI, CSI, kube-proxy)"
    )
    node_reserve_memory_gib: float = Field(default=2.0, ge=0, description="memory per GPU node kept for daemonsets")
    gpu_operator_namespace: str = "gpu-operator"
    dcgm_service: str = "nvidia-dcgm-exporter"
    dcgm_port: int = 9400
    nginx_listen_port: int = 8080

    @field_validator("namespace", "cluster_name")
    @classmethod
    def _names(cls, value: str) -> str:
        return _dns_label(value, "name")

    @field_validator("models")
    @classmethod
    def _sources(cls, value: dict[str, str]) -> dict[str, str]:
        for model, source in value.items():
            if not (_URI.match(source) or _HUB_ID.match(source)):
                raise ValueError(f"models[{model}]: {source!r} is neither a hub id (org/name) nor an s3://, gs:// URI")
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError(f"prometheus_url {value!r} is not an http(s) URL")
        return value
