"""A campaign as Kubernetes objects: per cluster (cloud + region, or an existing fleet) the node pools its targets
need, the namespace, the storage class for per-pod weight volumes, a ConfigMap with the campaign's manifest and one
batch/v1 Job per (variant, GPU, slice).

The Jobs are built from the deploy bundle's own pieces (vlmopt/emit): a `Cluster` of `DeployGroup`s gives the same
platform-label affinity, tolerations, MIG resource, instance-sized requests, weights init step, volumes and secret
references as a serving pod; only the container runs `vlmopt benchmark` instead of `vllm serve`.
docs/benchmark.md#campaigns explains each Job field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from vlmopt.emit._common import GENERATED_BY, dump_yaml_documents, k8s_name, label_value
from vlmopt.emit.clusters import Cluster, DeployGroup, NodePool
from vlmopt.emit.groups import EngineConfig, ReplicaGroup, container_model_path, engine_env
from vlmopt.emit.kubernetes import (
    PART_OF,
    POD_SECURITY,
    RESTRICTED_CONTAINER,
    download_job,
    engine_container_env,
    engine_resources,
    engine_volume_mounts,
    gpu_node_affinity,
    gpu_tolerations,
    group_gpu_products,
    model_volume_claim,
    namespace_object,
    pod_volumes,
    storage_class_name,
    storage_class_object,
    weights_init_container,
)
from vlmopt.emit.node_pools import emit_cluster_node_pools
from vlmopt.emit.policy import SPOT_POD_GRACE_S, Shutdown
from vlmopt.emit.sizing import FALLBACK_CPU_MIG, FALLBACK_CPU_WHOLE_GPU, FALLBACK_HOST_OVERHEAD_GIB, pod_size
from vlmopt.emit.weights import AWS_CLI_IMAGE, GCLOUD_IMAGE, weight_source
from vlmopt.schemas import GpuAssignment, GpuCatalog, HostSizing, NodeGroup, Plan, Provenance, Replica, ServerArgs
from vlmopt.schemas.campaign import CampaignTarget, ResultsLocation
from vlmopt.schemas.deploy import DeploySettings
from vlmopt.schemas.plan import CostSummary

from . import command as cmd
from .targets import homogeneous_layout

CAMPAIGN_LABEL = "vlmopt.io/campaign"
JOB_LABEL = "vlmopt.io/campaign-job"
BENCHMARK_CONTAINER = "benchmark"
SYNC_CONTAINER = "results-sync"
# One failed attempt is usually a transient fault (a Xid, an OOM under a noisy neighbour, a lost node); every retry
# resumes the profile, so a retry costs a startup, not the points already measured. More than two is a real fault.
BACKOFF_LIMIT = 2
# A week: long enough for `vlmopt benchmark collect` to read the Job's pods (times, logs) after a weekend; the
# results themselves stay on the PVC or bucket.
TTL_AFTER_FINISHED_S = 7 * 24 * 3600
# Time a pod may wait for a node (cluster autoscaler scale-up from zero, image pull) before the deadline counts it
# as stuck, on top of twice the expected run per attempt.
PENDING_ALLOWANCE_S = 1800
# vlmopt stops vLLM and saves within seconds of SIGTERM; the results sidecar then uploads the last files.
JOB_GRACE_S = 60
RESULTS_SYNC_INTERVAL_S = 60
READER_IMAGE = "busybox:1.37"
# The benchmark client's own process next to vLLM: image generation and the HTTP client (docs/benchmark.md).
CLIENT_CPU = 1.0
CLIENT_MEMORY_GIB = 2.0


@dataclass(frozen=True)
class JobSpec:
    """What one job needs to become a Kubernetes Job (or a SkyPilot task)."""

    name: str
    variant: str
    model: str  # the checkpoint as a plan would name it (local folder relative to the working folder, or hub id)
    weights_gib: float
    target: CampaignTarget
    argv: list[str]
    expected_run_s: float


def results_job_dir(results: ResultsLocation, job: str) -> str:
    return f"{cmd.RESULTS_MOUNT}/{results.prefix}/{job}"


def pool_key(target: CampaignTarget) -> tuple:
    return (target.cloud, target.region, target.gpu, target.slice, target.market, target.instance_type)


def _slot_replicas(slices: list[str], server_args: ServerArgs) -> list[Replica]:
    """One benchmark slot per slice of the layout (or the whole GPU): what a node of the pool runs at once."""
    return [
        Replica(service="benchmark", variant="slot", slice=s, server_args=server_args, capacity_rps=0.0,
                capacity_provenance=Provenance(kind="estimated", source="benchmark slot (not planned capacity)"))
        for s in slices
    ]


def node_groups_for(
    jobs: list[JobSpec], catalog: GpuCatalog, campaign: str
) -> dict[tuple, tuple[NodeGroup, int]]:
    """One node group per (cloud, region, GPU, slice, market, instance type): its slices laid out homogeneously,
    and the nodes it needs so that every job on it runs at the same time."""
    out: dict[tuple, tuple[NodeGroup, int]] = {}
    counts: dict[tuple, int] = {}
    for job in jobs:
        counts[pool_key(job.target)] = counts.get(pool_key(job.target), 0) + 1
    for key, count in counts.items():
        cloud, region, gpu_id, slice_name, market, instance_type = key
        target = next(j.target for j in jobs if pool_key(j.target) == key)
        gpu = catalog.get(gpu_id)
        layout = homogeneous_layout(gpu, slice_name)
        slots = len(layout) if layout else 1
        per_node = slots * target.gpus_per_instance
        nodes = max(1, math.ceil(count / per_node))
        args = ServerArgs(model="-")
        ng = NodeGroup(
            name=k8s_name("bench", campaign, gpu_id, "" if slice_name == "whole" else slice_name,
                          market.replace("_", "-"), max_len=40),
            gpu=gpu_id, cloud=cloud, region=region, instance_type=instance_type, market=market,
            gpus_per_instance=target.gpus_per_instance, instances=nodes,
            gpu_layout=GpuAssignment(mig_layout=layout, replicas=_slot_replicas(layout or ["whole"], args)),
            usd_per_hour=0.0, price_provenance=Provenance(kind="catalog", source="campaign node pool"),
        )
        out[key] = (ng, nodes)
    return out


def _job_replica(job: JobSpec, server_args: ServerArgs) -> Replica:
    """The job's host needs as the deploy bundle sizes a replica: vLLM's fallback rule plus the benchmark client."""
    whole = job.target.slice == "whole"
    cpu = (FALLBACK_CPU_WHOLE_GPU if whole else FALLBACK_CPU_MIG) + CLIENT_CPU
    memory = job.weights_gib + FALLBACK_HOST_OVERHEAD_GIB + CLIENT_MEMORY_GIB
    host = HostSizing(api_server_count=1, cpu_cores=cpu, memory_gib=round(memory, 2), provenance=Provenance(
        kind="estimated", source="deploy bundle's fallback rule + the benchmark client "
        f"({CLIENT_CPU:g} core, {CLIENT_MEMORY_GIB:g} GiB)"))
    return Replica(service="benchmark", variant=job.variant, slice=job.target.slice, server_args=server_args,
                   capacity_rps=0.0, memory_gib={"weights": round(job.weights_gib, 3)}, host=host,
                   capacity_provenance=Provenance(kind="estimated", source="benchmark job"))


def _grace(target: CampaignTarget) -> Shutdown:
    grace = JOB_GRACE_S
    how = f"{JOB_GRACE_S} s: vlmopt saves and stops vLLM on SIGTERM, then the results are uploaded"
    if target.market == "spot" and target.cloud in SPOT_POD_GRACE_S:
        grace = min(grace, SPOT_POD_GRACE_S[target.cloud])
        how = f"spot notice ({target.cloud}): {grace} s"
    return Shutdown(grace, 0, 0, how)


def build_clusters(
    jobs: list[JobSpec], catalog: GpuCatalog, settings: DeploySettings, campaign: str
) -> list[Cluster]:
    """The deploy bundle's cluster model for the campaign: pools that scale from zero and one group per job."""
    pools = node_groups_for(jobs, catalog, campaign)
    clusters: dict[tuple[str | None, str | None], Cluster] = {}
    for key, (ng, nodes) in pools.items():
        cloud, region = key[0], key[1]
        cluster = clusters.setdefault((cloud, region), Cluster(cloud, region, []))
        # On a cloud the pool starts empty and grows while jobs wait; a fleet has the nodes it has.
        cluster.pools.append(NodePool(ng, k8s_name(ng.name, max_len=40), 0 if cloud else nodes, nodes))
    for job in jobs:
        cluster = clusters[(job.target.cloud, job.target.region)]
        ng = pools[pool_key(job.target)][0]
        args = ServerArgs(model=container_model_path(job.model))
        engine = EngineConfig(
            service="benchmark", variant=job.variant, gpu=job.target.gpu, slice=job.target.slice,
            server_args=args, env=engine_env(args, job.target.slice), capacity_rps=0.0,
            capacity_provenance=Provenance(kind="estimated", source="benchmark job"))
        # The job takes one slot of the pool's layout: its own replica there carries its weights (volume size)
        # and host needs, the other slots stay as they are (they set its share of the node).
        replica = _job_replica(job, args)
        slots = ng.gpu_layout.replicas
        job_ng = ng.model_copy(update={"gpu_layout": ng.gpu_layout.model_copy(
            update={"replicas": [replica, *slots[1:]]})})
        group = ReplicaGroup(engine=engine, market=job.target.market, replicas=1, node_groups=[job_ng])
        cluster.groups.append(DeployGroup(
            name=job.name, group=group, variant=job.variant, model=job.model, arm="a", replicas=1, max_replicas=1,
            size=pod_size(job_ng, replica, settings), shutdown=_grace(job.target), frontend=[],
            weights=weight_source(job.model, job.target.cloud, settings)))
    return list(clusters.values())


def campaign_plan(name: str, clusters: list[Cluster]) -> Plan:
    """The campaign's node pools as a Plan, for the bundle's node-pool and mig-parted emitters."""
    groups = [p.node_group for c in clusters for p in c.pools]
    mode = "cloud" if any(g.cloud for g in groups) else "fleet"
    return Plan(name=name, mode=mode, created="", workload=f"benchmark campaign {name}", services=[],
                node_groups=groups, cost=CostSummary(usd_per_hour=0.0, usd_per_month=0.0))


def inputs_configmap_name(campaign: str) -> str:
    return k8s_name(campaign, "inputs")


def inputs_configmap(campaign: str, manifest_text: str, settings: DeploySettings) -> dict[str, Any]:
    """The campaign's variant manifest (paths pointing under /models) and the job's entry script."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": inputs_configmap_name(campaign), "namespace": settings.namespace,
                     "labels": {PART_OF: "vlmopt", CAMPAIGN_LABEL: label_value(campaign)}},
        "data": {cmd.MANIFEST_FILE: manifest_text, cmd.WRAPPER_FILE: cmd.wrapper_script()},
    }


def k8s_escape(script: str) -> str:
    """A shell script as a container `command` word: every `$` doubled, which the kubelet's `$(VAR)` expansion
    turns back into one (kubernetes third_party/forked/golang/expansion/expand.go), so `$(date ...)` and `$!` reach
    the shell as written."""
    return script.replace("$", "$$")


def _cli_image(kind: str) -> str:
    return AWS_CLI_IMAGE if kind == "s3" else GCLOUD_IMAGE


def _bucket_copy(kind: str, src: str, dst: str) -> str:
    if kind == "s3":
        return f"aws s3 sync --no-progress {src} {dst}"
    return f"gcloud storage rsync --recursive {src} {dst}"


def bucket_job_uri(results: ResultsLocation, job: str) -> str:
    return f"{results.root_uri()}/{job}"


def restore_container(results: ResultsLocation, job: str) -> dict[str, Any]:
    """Bucket results: a retried or resubmitted job first gets back what it saved before, so --resume continues."""
    local = results_job_dir(results, job)
    copy = _bucket_copy(results.kind, bucket_job_uri(results, job), local)
    if results.kind == "gs":  # rsync from a prefix that does not exist yet is an error for gcloud
        copy = f"if gcloud storage ls {bucket_job_uri(results, job)} >/dev/null 2>&1; then {copy}; fi"
    script = f"mkdir -p {local} && {copy} && echo restored {bucket_job_uri(results, job)} into {local}"
    return {
        "name": "results-restore",
        "image": _cli_image(results.kind),
        "command": ["sh", "-c", k8s_escape(script)],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "results", "mountPath": cmd.RESULTS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": dict(RESTRICTED_CONTAINER),
    }


def sync_sidecar(results: ResultsLocation, job: str) -> dict[str, Any]:
    """Bucket results: a sidecar (an init container with restartPolicy Always, Kubernetes >= 1.29) that copies the
    job's folder to the bucket every minute and once more when the pod stops, with the cloud CLI image the deploy
    bundle's weight download uses (the vLLM image ships no cloud CLI)."""
    local = results_job_dir(results, job)
    copy = _bucket_copy(results.kind, local, bucket_job_uri(results, job))
    script = "\n".join([
        f"sync_now() {{ mkdir -p {local} && {copy}; }}",
        "trap 'sync_now; exit 0' TERM",
        f"while true; do sync_now; sleep {RESULTS_SYNC_INTERVAL_S} & wait $!; done",
    ])
    return {
        "name": SYNC_CONTAINER,
        "image": _cli_image(results.kind),
        "restartPolicy": "Always",
        "command": ["sh", "-c", k8s_escape(script)],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "results", "mountPath": cmd.RESULTS_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": dict(RESTRICTED_CONTAINER),
    }


def results_volume(results: ResultsLocation) -> dict[str, Any]:
    if results.kind == "pvc":
        return {"name": "results", "persistentVolumeClaim": {"claimName": results.claim}}
    return {"name": "results", "emptyDir": {"sizeLimit": "10Gi"}}


def active_deadline_s(job: JobSpec) -> int:
    """Pending allowance + every attempt running twice its expected time, in whole minutes."""
    seconds = PENDING_ALLOWANCE_S + (BACKOFF_LIMIT + 1) * 2 * job.expected_run_s
    return int(math.ceil(seconds / 60) * 60)


def job_labels(campaign: str, job: JobSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vlmopt-benchmark",
        PART_OF: "vlmopt",
        CAMPAIGN_LABEL: label_value(campaign),
        JOB_LABEL: label_value(job.name),
        "vlmopt.io/variant": label_value(job.variant),
        "vlmopt.io/gpu": label_value(job.target.gpu),
        "vlmopt.io/slice": label_value(job.target.slice),
    }


def job_object(
    campaign: str, job: JobSpec, cluster: Cluster, group: DeployGroup, settings: DeploySettings,
    catalog: GpuCatalog, results: ResultsLocation, install: str, serve_python: str,
) -> dict[str, Any]:
    env = engine_container_env(group.engine.env)
    env += [{"name": k, "value": v} for k, v in cmd.job_env(
        job.name, campaign, results_job_dir(results, job.name), install, serve_python).items()]
    container = {
        "name": BENCHMARK_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": cmd.entry_command(),
        # `$(VAR)` in args is the kubelet's expansion of the container's env (the job's paths)
        "args": job.argv,
        "env": env,
        "resources": engine_resources(group.engine, group.size),
        "volumeMounts": [
            *engine_volume_mounts(),
            {"name": "inputs", "mountPath": cmd.INPUTS_MOUNT, "readOnly": True},
            {"name": "results", "mountPath": cmd.RESULTS_MOUNT},
        ],
        "securityContext": dict(RESTRICTED_CONTAINER),
    }
    init = [weights_init_container(group.weights, settings)]
    if results.kind != "pvc":
        init += [restore_container(results, job.name), sync_sidecar(results, job.name)]
    labels = job_labels(campaign, job)
    pod: dict[str, Any] = {
        # podFailurePolicy needs Never: each attempt is a new pod, and every attempt resumes the profile.
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": group.shutdown.grace_s,
        "securityContext": dict(POD_SECURITY),
        # MIG: the slice comes from the resource request alone (any node offering it will do), so no mig.config term.
        "affinity": gpu_node_affinity(cluster.cloud, group.market, group_gpu_products(group, catalog)),
        "tolerations": gpu_tolerations(cluster.cloud, group.market),
        "initContainers": init,
        "containers": [container],
        "volumes": [
            *pod_volumes(group, cluster, settings),
            {"name": "inputs", "configMap": {"name": inputs_configmap_name(campaign)}},
            results_volume(results),
        ],
    }
    if settings.storage.service_account:
        pod["serviceAccountName"] = settings.storage.service_account
    annotations = {
        "vlmopt.io/target": f"{job.target.label} {job.target.market}",
        "vlmopt.io/why": job.target.why,
        "vlmopt.io/sizing": group.size.derivation,
        "vlmopt.io/grace": group.shutdown.derivation,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job.name, "namespace": settings.namespace, "labels": labels,
                     "annotations": annotations},
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": active_deadline_s(job),
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "podFailurePolicy": {"rules": [
                # vlmopt's bad-input exit code: the same command fails the same way again
                {"action": "FailJob", "onExitCodes": {"containerName": BENCHMARK_CONTAINER, "operator": "In",
                                                      "values": [cmd.EXIT_BAD_INPUT]}},
                # preemption, eviction, node drain or shutdown: not the job's fault, retried without counting
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": {"metadata": {"labels": labels, "annotations": {"vlmopt.io/why": job.target.why}},
                         "spec": pod},
        },
    }


def results_reader_pod(campaign: str, results: ResultsLocation, settings: DeploySettings) -> dict[str, Any]:
    """PVC results: a pod that mounts the claim read-only so `kubectl cp` can copy the campaign's folder home."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": k8s_name(campaign, "results"), "namespace": settings.namespace,
                     "labels": {PART_OF: "vlmopt", CAMPAIGN_LABEL: label_value(campaign)}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": dict(POD_SECURITY),
            "containers": [{
                "name": "reader",
                # small, with the `tar` that `kubectl cp` needs; runs on any node (no GPU, no vLLM image pull)
                "image": READER_IMAGE,
                "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "results", "mountPath": cmd.RESULTS_MOUNT, "readOnly": True}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}},
                "securityContext": dict(RESTRICTED_CONTAINER),
            }],
            "volumes": [{"name": "results", "persistentVolumeClaim": {"claimName": results.claim,
                                                                      "readOnly": True}}],
        },
    }


def emit_campaign_kubernetes(
    campaign: str, jobs: list[JobSpec], manifest_text: str, catalog: GpuCatalog, settings: DeploySettings,
    results: ResultsLocation, install: str, serve_python: str,
) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(files, job name -> (cluster key, Job file)). Per cluster: node pools, GPU operator values and mig-parted
    ConfigMap (the bundle's emitters), namespace, storage, the inputs ConfigMap and one file per Job."""
    clusters = build_clusters(jobs, catalog, settings, campaign)
    plan = campaign_plan(campaign, clusters)
    by_name = {j.name: j for j in jobs}
    files: dict[str, str] = {}
    where: dict[str, tuple[str, str]] = {}
    header = [f"{GENERATED_BY.replace('vlmopt plan', 'vlmopt benchmark campaign')} ({campaign})"]
    for cluster in clusters:
        folder = cluster.folder
        for path, text in emit_cluster_node_pools(cluster, plan, catalog, settings).items():
            files[path] = text.replace(GENERATED_BY, "generated by vlmopt benchmark campaign", 1)
        base: list[dict] = [namespace_object(plan, settings)]
        storage = storage_class_object(cluster, settings)
        if storage is not None:
            base.append(storage)
        if settings.storage.mode == "shared":
            base.append(model_volume_claim(cluster, settings))
        else:
            storage_class_name(cluster, settings)  # a fleet cluster without a class for shared mode is refused
        base.append(inputs_configmap(campaign, manifest_text, settings))
        files[f"{folder}/kubernetes/00-campaign.yaml"] = dump_yaml_documents(
            base, [*header, "kubectl apply -f <this file> (namespace, storage, the campaign's manifest)"])
        if settings.storage.mode == "shared":
            files[f"{folder}/kubernetes/01-model-download.yaml"] = dump_yaml_documents(
                [download_job(w, settings) for w in cluster.weights], header)
        if results.kind == "pvc":
            files[f"{folder}/kubernetes/results-reader.yaml"] = dump_yaml_documents(
                [results_reader_pod(campaign, results, settings)],
                [*header, "after the jobs: kubectl apply -f <this file>, then kubectl cp (README.md)"])
        for group in cluster.groups:
            job = by_name[group.name]
            path = f"{folder}/kubernetes/jobs/{job.name}.yaml"
            files[path] = dump_yaml_documents(
                [job_object(campaign, job, cluster, group, settings, catalog, results, install, serve_python)],
                [*header, f"{job.variant} on {job.target.label} ({job.target.market}): kubectl apply -f <this file>"])
            where[job.name] = (cluster.key, path)
    return files, where


def manifest_for_jobs(manifest_data: dict[str, Any], models: dict[str, str]) -> str:
    """The variant manifest as jobs read it: each variant's `path` points at where its checkpoint lands in the job
    (under /models, relative to the manifest's own folder in the job)."""
    import posixpath

    data = json.loads(json.dumps(manifest_data))
    for variant in data["variants"]:
        model = models.get(variant["name"])
        if model is not None:
            variant["path"] = posixpath.relpath(container_model_path(model), cmd.INPUTS_MOUNT)
    return json.dumps(data, indent=2) + "\n"
