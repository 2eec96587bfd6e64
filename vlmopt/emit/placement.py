"""Placement check: read a bundle's files as a cluster would, and say whether its pods can run.

For each cluster folder, from the node pool definitions the bundle emits (eksctl, GKE commands, fleet labels), the
platform's labels and taints (platform.py), the instance's allocatable resources (instances.py) and the MIG layout
each pool's config name selects (the mig-parted ConfigMap), it checks every Deployment:
- its node affinity and tolerations match some pool whose nodes offer the GPU resource it requests;
- the pods that fill one node of that pool fit the node's allocatable CPU and memory together;
- every volume claim can bind: the StorageClass's provisioner supports the access mode;
- a rollout can progress with the slices bought (no surge without a free slice, at least one pod replaceable);
- the autoscaler bounds fit the pools (min at their minimum size, max at their maximum), there is no `replicas`
  field under an autoscaler, and a fixed Deployment has one;
- the shutdown fits: preStop + vLLM's --shutdown-timeout inside terminationGracePeriodSeconds, and on spot inside
  the cloud's notice; weights are fetched before vLLM starts and the server never reaches the hub.

It only reads files (no cluster); docs/deploy-bundle.md#what-is-checked says what only a real cluster can show.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from vlmopt.schemas import GpuCatalog

from .instances import (
    EVICTION_GIB,
    GKE_ACCELERATORS,
    eks_reserved_memory_gib,
    gke_reserved_memory_gib,
    instance_table,
    reserved_cpu,
)
from .kubernetes import PROVISIONER_ACCESS
from .platform import GPU_TAINT, pool_platform_labels, pool_platform_taints
from .policy import SPOT_POD_GRACE_S

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    where: str
    message: str


@dataclass
class Pool:
    name: str
    cloud: str | None
    spot: bool
    min_nodes: int
    max_nodes: int
    labels: dict[str, str]
    taints: list[dict[str, str]]
    cpu: float | None  # allocatable cores, None = unknown instance
    memory_gib: float | None
    gpu_resources: dict[str, int] = field(default_factory=dict)


def _quantity_cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _quantity_gib(q: str) -> float:
    units = {"Ki": 1 / 1024**2, "Mi": 1 / 1024, "Gi": 1.0, "Ti": 1024.0}
    for suffix, scale in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * scale
    return float(q) / 1024**3


def _docs(files: dict[str, str], prefix: str) -> list[dict]:
    out = []
    for path, text in files.items():
        if path.startswith(prefix) and path.endswith((".yaml", ".yml")):
            out += [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and "kind" in d]
    return out


def _mig_layouts(files: dict[str, str], folder: str) -> dict[str, dict[str, int]]:
    """mig-parted config name -> MIG resources per GPU, from the cluster's ConfigMap."""
    layouts: dict[str, dict[str, int]] = {}
    for doc in _docs(files, f"{folder}/mig-parted-configmap"):
        config = yaml.safe_load(doc["data"]["config.yaml"])
        for name, entries in config["mig-configs"].items():
            per_gpu: dict[str, int] = {}
            for entry in entries:
                for profile, n in (entry.get("mig-devices") or {}).items():
                    key = "nvidia.com/mig-" + profile.replace("+", ".")
                    per_gpu[key] = per_gpu.get(key, 0) + n
            layouts[name] = per_gpu
    return layouts


def _allocatable(cloud: str | None, instance_type: str | None) -> tuple[float | None, float | None, Any]:
    row = instance_table().get((cloud or "", instance_type or ""))
    if row is None:
        return None, None, None
    cpu = row.vcpus - reserved_cpu(row.vcpus)
    reserved = eks_reserved_memory_gib(row) if cloud == "aws" else gke_reserved_memory_gib(row.memory_gib)
    return cpu, row.memory_gib - reserved - EVICTION_GIB, row


def _gpu_product(catalog: GpuCatalog, gpu_id: str) -> str:
    return catalog.get(gpu_id).names[0].replace(" ", "-")


def _resources(mig_config: str | None, layouts: dict[str, dict[str, int]], gpus: int) -> dict[str, int]:
    per_gpu = layouts.get(mig_config or "", {})
    if not per_gpu:
        return {"nvidia.com/gpu": gpus}
    return {k: v * gpus for k, v in per_gpu.items()}


def _eksctl_pools(files: dict[str, str], folder: str, catalog: GpuCatalog, layouts) -> list[Pool]:
    pools = []
    for path, text in files.items():
        if path != f"{folder}/node-pools/eksctl-nodegroups.yaml":
            continue
        for ng in yaml.safe_load(text)["managedNodeGroups"]:
            instance = ng.get("instanceType") or ng["instanceTypes"][0]
            cpu, memory, row = _allocatable("aws", instance)
            labels = pool_platform_labels(
                "aws", ng["name"], instance, bool(ng.get("spot")), _gpu_product(catalog, row.gpu) if row else ""
            )
            labels.update(ng.get("labels") or {})
            taints = list(ng.get("taints") or [])
            gpus = row.gpus if row else 1
            pools.append(Pool(ng["name"], "aws", bool(ng.get("spot")), ng["minSize"], ng["maxSize"], labels, taints,
                              cpu, memory, _resources(labels.get("nvidia.com/mig.config"), layouts, gpus)))
    return pools


def _flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _gke_pools(files: dict[str, str], folder: str, catalog: GpuCatalog, layouts) -> list[Pool]:
    pools = []
    text = files.get(f"{folder}/node-pools/gke-node-pools.sh")
    if text is None:
        return pools
    reverse = {v: k for k, v in GKE_ACCELERATORS.items()}
    for line in text.splitlines():
        if not line.startswith("gcloud "):
            continue
        args = shlex.split(line)
        name = args[4]
        machine = _flag(args, "--machine-type")
        accel = dict(kv.split("=", 1) for kv in (_flag(args, "--accelerator") or "").split(","))
        spot = "--spot" in args
        cpu, memory, _ = _allocatable("gcp", machine)
        gpu_id = reverse.get(accel.get("type", ""), "")
        labels = pool_platform_labels("gcp", name, machine, spot, _gpu_product(catalog, gpu_id) if gpu_id else "",
                                      accel.get("type"))
        labels.update(dict(kv.split("=", 1) for kv in (_flag(args, "--node-labels") or "").split(",") if kv))
        taints = pool_platform_taints("gcp")
        for t in (_flag(args, "--node-taints") or "").split(","):
            if t:
                key, rest = t.split("=", 1)
                value, effect = rest.split(":", 1)
                taints.append({"key": key, "value": value, "effect": effect})
        gpus = int(accel.get("count", "1"))
        pools.append(Pool(name, "gcp", spot, int(_flag(args, "--total-min-nodes") or 0),
                          int(_flag(args, "--total-max-nodes") or 0), labels, taints, cpu, memory,
                          _resources(labels.get("nvidia.com/mig.config"), layouts, gpus)))
    return pools


def _fleet_pools(files: dict[str, str], folder: str, catalog: GpuCatalog, layouts) -> list[Pool]:
    text = files.get(f"{folder}/node-pools/node-labels.yaml")
    if text is None:
        return []
    pools = []
    for p in yaml.safe_load(text)["node_pools"]:
        labels = {"nvidia.com/gpu.product": _gpu_product(catalog, p["gpu"]), **p["labels"]}
        pools.append(Pool(p["node_group"], None, False, p["nodes"], p["nodes"], labels, [dict(GPU_TAINT)], None, None,
                          _resources(labels.get("nvidia.com/mig.config"), layouts, p["gpus_per_node"])))
    return pools


def _matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    op, key = expr["operator"], expr["key"]
    if op == "In":
        return labels.get(key) in expr["values"]
    if op == "NotIn":
        return labels.get(key) not in expr["values"]
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unsupported operator {op}")


def _tolerated(taint: dict[str, str], tolerations: list[dict[str, Any]]) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, taint["effect"]):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value"):
            return True
    return False


def _gpu_request(container: dict) -> tuple[str, int] | None:
    for key, value in container["resources"].get("requests", {}).items():
        if key.startswith("nvidia.com/"):
            return key, int(value)
    return None


def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def check_placement(files: dict[str, str], catalog: GpuCatalog) -> list[Finding]:
    findings: list[Finding] = []
    folders = sorted({"/".join(p.split("/")[:2]) for p in files if p.startswith("clusters/")})
    for folder in folders:
        findings += _check_cluster(files, folder, catalog)
    return findings


def _check_cluster(files: dict[str, str], folder: str, catalog: GpuCatalog) -> list[Finding]:
    out: list[Finding] = []
    layouts = _mig_layouts(files, folder)
    pools = (_eksctl_pools(files, folder, catalog, layouts) + _gke_pools(files, folder, catalog, layouts)
             + _fleet_pools(files, folder, catalog, layouts))
    docs = _docs(files, f"{folder}/")
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_kind[d["kind"]].append(d)
    classes = {d["metadata"]["name"]: d for d in by_kind["StorageClass"]}
    scalers = {d["spec"]["scaleTargetRef"]["name"]: (d["spec"]["minReplicaCount"], d["spec"]["maxReplicaCount"])
               for d in by_kind["ScaledObject"]}
    scalers |= {d["spec"]["scaleTargetRef"]["name"]: (d["spec"].get("minReplicas", 1), d["spec"]["maxReplicas"])
                for d in by_kind["HorizontalPodAutoscaler"]}
    cloud = pools[0].cloud if pools else None
    # (resource, pools) -> [(deployment, min, max)]: Deployments that compete for the same slices.
    demand: dict[tuple[str, tuple[str, ...]], list[tuple[str, int, int]]] = defaultdict(list)
    fills: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)

    for pvc in by_kind["PersistentVolumeClaim"]:
        out += _check_claim(folder, f"PersistentVolumeClaim/{pvc['metadata']['name']}", pvc["spec"], classes)

    for dep in by_kind["Deployment"]:
        name = dep["metadata"]["name"]
        where = f"{folder}: Deployment/{name}"
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        gpu = _gpu_request(container)
        fit = _admitting_pools(pod, gpu, pools)
        if not fit:
            out.append(Finding("error", where, "no node pool's platform labels, taints and GPU resources admit it"))
            continue
        requests = container["resources"]["requests"]
        cpu, mem = _quantity_cpu(requests["cpu"]), _quantity_gib(requests["memory"])
        for p in fit:
            fills[(p.name, gpu[0] if gpu else "")].append((cpu, mem))
        # replicas vs autoscaler
        has_replicas = "replicas" in dep["spec"]
        if name in scalers and has_replicas:
            out.append(Finding("error", where, "sets `replicas` while an autoscaler owns the count"))
        if name not in scalers and not has_replicas:
            out.append(Finding("error", where, "has neither `replicas` nor an autoscaler (it would run 1 pod)"))
        low, high = scalers.get(name, (dep["spec"].get("replicas", 1),) * 2)
        if low > high:
            out.append(Finding("error", where, f"autoscaler min {low} > max {high}"))
        if gpu:
            demand[(gpu[0], tuple(sorted(p.name for p in fit)))].append((name, low, high))
        # rollout
        rolling = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
        surge, unavailable = rolling.get("maxSurge", "25%"), rolling.get("maxUnavailable", "25%")
        if surge not in (0, "0", "0%"):
            spare = sum(p.min_nodes * p.gpu_resources.get(gpu[0], 0) for p in fit) - low if gpu else 1
            if spare < 1:
                out.append(Finding("error", where, f"maxSurge {surge} but no free slice at the planned size: "
                                                   "the rollout never finishes"))
        elif unavailable in (0, "0", "0%"):
            out.append(Finding("error", where, "maxSurge 0 and maxUnavailable 0: the rollout cannot start"))
        # shutdown
        args = container.get("args", [])
        drain = int(_arg(args, "--shutdown-timeout") or 0)
        prestop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["", "0"])
        prestop_s = int(prestop[-1]) if prestop and prestop[-1].isdigit() else 0
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if drain == 0:
            out.append(Finding("error", where, "vLLM --shutdown-timeout is 0: SIGTERM aborts in-flight streams"))
        if prestop_s + drain > grace:
            out.append(Finding("error", where, f"preStop {prestop_s} s + drain {drain} s exceed the grace {grace} s"))
        if any(p.spot for p in fit) and cloud in SPOT_POD_GRACE_S and grace > SPOT_POD_GRACE_S[cloud]:
            out.append(Finding("error", where, f"grace {grace} s is longer than {cloud}'s spot notice allows "
                                               f"({SPOT_POD_GRACE_S[cloud]} s)"))
        # weights
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if env.get("HF_HUB_OFFLINE") != "1" or not pod.get("initContainers"):
            out.append(Finding("error", where, "no weight download before start (init container + HF_HUB_OFFLINE=1)"))
        # volumes
        memory_limit = _quantity_gib(container["resources"]["limits"]["memory"])
        for vol in pod.get("volumes", []):
            if "ephemeral" in vol:
                spec = vol["ephemeral"]["volumeClaimTemplate"]["spec"]
                out += _check_claim(folder, f"Deployment/{name} volume {vol['name']}", spec, classes)
            if vol.get("emptyDir", {}).get("medium") == "Memory":
                size = _quantity_gib(vol["emptyDir"].get("sizeLimit", "0"))
                if size <= 0 or size >= memory_limit:
                    out.append(Finding("error", where, f"/dev/shm {size:g} GiB is not within the memory limit"))

    configmaps = {d["metadata"]["name"] for d in by_kind["ConfigMap"]}
    for job in by_kind["Job"]:
        out += _check_job(folder, job, pools, classes, configmaps, cloud, fills)

    # A full node: every slot of each GPU resource taken by the largest pod that may land on it.
    node_load: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (pool_name, resource), requests in fills.items():
        pool = next(p for p in pools if p.name == pool_name)
        slots = pool.gpu_resources.get(resource, 0)
        node_load[pool_name][0] += max(c for c, _ in requests) * slots
        node_load[pool_name][1] += max(m for _, m in requests) * slots
    for pool in pools:
        if pool.name not in node_load:
            continue
        if pool.cpu is None or pool.memory_gib is None:
            out.append(Finding("warning", f"{folder}: pool {pool.name}", "instance type unknown: fit not checked"))
            continue
        cpu, mem = node_load[pool.name]
        if cpu > pool.cpu + 1e-6 or mem > pool.memory_gib + 1e-6:
            out.append(Finding("error", f"{folder}: pool {pool.name}",
                               f"a full node needs {cpu:.2f} cores / {mem:.1f} GiB but allocates {pool.cpu:.2f} / "
                               f"{pool.memory_gib:.1f}"))

    by_name = {p.name: p for p in pools}
    for (resource, pool_names), deps in demand.items():
        at_min = sum(by_name[n].min_nodes * by_name[n].gpu_resources.get(resource, 0) for n in pool_names)
        at_max = sum(by_name[n].max_nodes * by_name[n].gpu_resources.get(resource, 0) for n in pool_names)
        low = sum(d[1] for d in deps)
        high = sum(d[2] for d in deps)
        names = ", ".join(d[0] for d in deps)
        if low > at_min:
            out.append(Finding("error", f"{folder}: {names}", f"need {low} x {resource} at minimum, pools {pool_names} "
                                                              f"give {at_min}"))
        if high > at_max:
            out.append(Finding("error", f"{folder}: {names}", f"scale to {high} x {resource}, pools {pool_names} give "
                                                              f"{at_max} at their maximum size"))
    for pdb in by_kind["PodDisruptionBudget"]:
        spec = pdb["spec"]
        if spec.get("maxUnavailable", 1) in (0, "0", "0%"):
            out.append(Finding("error", f"{folder}: PodDisruptionBudget/{pdb['metadata']['name']}",
                               "maxUnavailable 0 blocks every drain"))
    return out


def _admitting_pools(pod: dict, gpu: tuple[str, int] | None, pools: list[Pool]) -> list[Pool]:
    """Pools whose nodes the pod's required affinity selects, whose taints it tolerates and whose nodes offer its
    GPU resource (a pool that cannot grow a node, max size 0, admits nothing)."""
    affinity = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = affinity["nodeSelectorTerms"] if affinity else [{}]
    tolerations = pod.get("tolerations", [])
    return [
        p for p in pools
        if any(all(_matches(e, p.labels) for e in t.get("matchExpressions", [])) for t in terms)
        and all(_tolerated(t, tolerations) for t in p.taints if t["effect"] in ("NoSchedule", "NoExecute"))
        and (gpu is None or p.gpu_resources.get(gpu[0], 0) >= gpu[1])
        and p.max_nodes > 0
    ]


def _pod_requests(pod: dict) -> tuple[float, float]:
    """What the scheduler reserves for a pod: its containers plus sidecars (init containers that keep running),
    or the largest plain init container when that is more (Kubernetes' effective request)."""
    def cpu_mem(container: dict) -> tuple[float, float]:
        requests = container.get("resources", {}).get("requests", {})
        return _quantity_cpu(str(requests.get("cpu", "0"))), _quantity_gib(str(requests.get("memory", "0")))

    sidecars = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    plain = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") != "Always"]
    running = [cpu_mem(c) for c in (*pod["containers"], *sidecars)]
    cpu, mem = sum(c for c, _ in running), sum(m for _, m in running)
    for c in plain:
        c_cpu, c_mem = cpu_mem(c)
        cpu, mem = max(cpu, c_cpu), max(mem, c_mem)
    return cpu, mem


def _check_job(folder: str, job: dict, pools: list[Pool], classes: dict[str, dict], configmaps: set[str],
               cloud: str | None, fills: dict[tuple[str, str], list[tuple[float, float]]]) -> list[Finding]:
    """A GPU Job (a benchmark campaign's): it places like a serving pod, retries as a Job must, and has its inputs.
    Jobs without a GPU (the shared-storage weight downloads) need no GPU pool."""
    out: list[Finding] = []
    name = job["metadata"]["name"]
    where = f"{folder}: Job/{name}"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    gpu = _gpu_request(container)
    if gpu is None:
        return out
    fit = _admitting_pools(pod, gpu, pools)
    if not fit:
        return [Finding("error", where, "no node pool's platform labels, taints and GPU resources admit it")]
    cpu, mem = _pod_requests(pod)
    for p in fit:
        fills[(p.name, gpu[0])].append((cpu, mem))
    policy = job["spec"].get("podFailurePolicy")
    if policy and pod.get("restartPolicy") != "Never":
        out.append(Finding("error", where, "podFailurePolicy needs restartPolicy Never"))
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        out.append(Finding("error", where, f"restartPolicy {pod.get('restartPolicy')!r}: a Job needs Never/OnFailure"))
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if env.get("HF_HUB_OFFLINE") != "1" or not pod.get("initContainers"):
        out.append(Finding("error", where, "no weight download before start (init container + HF_HUB_OFFLINE=1)"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if any(p.spot for p in fit) and cloud in SPOT_POD_GRACE_S and grace > SPOT_POD_GRACE_S[cloud]:
        out.append(Finding("error", where, f"grace {grace} s is longer than {cloud}'s spot notice allows "
                                           f"({SPOT_POD_GRACE_S[cloud]} s)"))
    memory_limit = _quantity_gib(container["resources"]["limits"]["memory"])
    for vol in pod.get("volumes", []):
        if "ephemeral" in vol:
            spec = vol["ephemeral"]["volumeClaimTemplate"]["spec"]
            out += _check_claim(folder, f"Job/{name} volume {vol['name']}", spec, classes)
        if vol.get("emptyDir", {}).get("medium") == "Memory":
            size = _quantity_gib(vol["emptyDir"].get("sizeLimit", "0"))
            if size <= 0 or size >= memory_limit:
                out.append(Finding("error", where, f"/dev/shm {size:g} GiB is not within the memory limit"))
        if "configMap" in vol and vol["configMap"]["name"] not in configmaps:
            out.append(Finding("error", where, f"ConfigMap {vol['configMap']['name']} is not in the folder: the "
                                               "pod would wait for it forever"))
        if "persistentVolumeClaim" in vol and vol["name"] != "models":
            out.append(Finding("warning", where, f"PersistentVolumeClaim {vol['persistentVolumeClaim']['claimName']}"
                                                 " is the user's: its access mode is checked at --submit"))
    return out


def _check_claim(folder: str, what: str, spec: dict, classes: dict[str, dict]) -> list[Finding]:
    name = spec.get("storageClassName")
    if name is None:
        return [Finding("warning", f"{folder}: {what}", "uses the cluster's default StorageClass: binding unverified")]
    sc = classes.get(name)
    if sc is None:
        return [Finding("warning", f"{folder}: {what}", f"StorageClass {name} is not in the bundle: not verified")]
    supported = PROVISIONER_ACCESS.get(sc["provisioner"], set())
    missing = [m for m in spec["accessModes"] if m not in supported]
    if missing:
        return [Finding("error", f"{folder}: {what}", f"{sc['provisioner']} cannot provide {missing}")]
    return []

