"""The bundle's README.md: the plan's figures with provenance, per service availability and failure policy (each
timeout with its derivation), the apply steps per cluster with the real file names, and every file with what it is
for, how to apply it and which validator checks it. Built from the file list, so it never lists a missing file."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from vlmopt.schemas import Plan
from vlmopt.schemas.deploy import DeploySettings

from .clusters import Cluster
from .mig_parted import ALL_DISABLED, node_group_mig_config
from .node_pools import MIG_CONFIGMAP, has_mig
from .skypilot import serve_up_command


@dataclass(frozen=True)
class FileKind:
    prefix: str
    suffix: str
    purpose: str
    apply: str
    validator: str


K8S = "kubernetes-validate (strict) + placement check"
FILE_KINDS: tuple[FileKind, ...] = (
    FileKind("plan.json", "", "the plan itself (Plan schema)", "input of `vlmopt report`", "pydantic Plan schema"),
    FileKind("vllm/", ".json", "vLLM command line + env of one engine config", "read by tooling", "vLLM's parser"),
    FileKind("vllm/", ".sh", "launcher for one replica on a VM", "`CUDA_VISIBLE_DEVICES=<MIG uuid> sh <file> --port N`",
             "`sh -n` + run with a stub"),
    FileKind("vllm/replicas.json", "", "every replica: node group, GPU, slice, port", "inventory", "JSON parse"),
    FileKind("clusters/", "eksctl-nodegroups.yaml", "EKS managed node groups (labels, taints, sizes)",
             "`eksctl create nodegroup -f`", "structure + placement check"),
    FileKind("clusters/", "gke-node-pools.sh", "GKE node-pool commands", "`sh <file>`", "gcloud's own parser"),
    FileKind("clusters/", "node-labels.yaml", "labels for existing fleet nodes", "`kubectl label node`",
             "placement check"),
    FileKind("clusters/", "gpu-operator-values.yaml", "GPU operator: mixed MIG strategy, mig-manager config",
             "`helm install gpu-operator -f`", "YAML + structure"),
    FileKind("clusters/", "mig-parted-configmap.yaml", "this cluster's MIG layouts for mig-manager",
             "`kubectl apply -f`", "kubernetes-validate (strict) + mig placement rules"),
    FileKind("clusters/", ".yaml", "Kubernetes objects", "`kubectl apply -f`", K8S),
    FileKind("clusters/", "keda-scaledobjects.yaml", "KEDA ScaledObjects on vllm:num_requests_waiting",
             "`kubectl apply -f` (KEDA 2.x)", "KEDA CRD schema + placement check"),
    FileKind("clusters/", "prometheus-adapter-values.yaml", "prometheus-adapter: Prometheus URL + queue metric",
             "`helm install prometheus-adapter -f`", "YAML + structure"),
    FileKind("clusters/", "httproutes.yaml", "Gateway API HTTPRoutes: timeouts, retries, weights",
             "`kubectl apply -f`", "Gateway API CRD schema"),
    FileKind("clusters/", "istio.yaml", "Istio VirtualServices + DestinationRules (outlier detection)",
             "`kubectl apply -f`", "Istio CRD schema"),
    FileKind("clusters/", "podmonitor.yaml", "Prometheus Operator PodMonitor", "`kubectl apply -f`",
             "Prometheus Operator CRD schema"),
    FileKind("clusters/", "prometheusrule.yaml", "Prometheus Operator PrometheusRule", "`kubectl apply -f`",
             "Prometheus Operator CRD schema + `promtool check rules`"),
    FileKind("clusters/", "prometheus.yml", "plain Prometheus config for this cluster", "Prometheus config",
             "`promtool check config` (discovery block: structure)"),
    FileKind("clusters/", "alerts.yml", "SLO, load, health and kube-state-metrics availability alerts", "rule file",
             "`promtool check rules` + `promtool test rules`"),
    FileKind("mig-parted/config.yaml", "", "MIG layouts (mig-parted v1) for VMs", "`nvidia-mig-parted apply -f`",
             "placement rules (vlmopt.hw.mig) + structure"),
    FileKind("weights/sources.yaml", "", "where each cluster's checkpoints come from", "reference", "YAML parse"),
    FileKind("weights/upload.sh", "", "copies local checkpoints to their buckets", "`sh weights/upload.sh`", "`sh -n`"),
    FileKind("skypilot/", ".yaml", "SkyPilot serve spec (vLLM image, spot + on-demand floor)", "`sky serve up`",
             "SkyPilot's own Task/Service parser"),
    FileKind("nginx/", ".conf", "least_conn upstream + /v1 proxy for VMs", "include in `http {}`", "`nginx -t`"),
    FileKind("prometheus/prometheus-static.yml", "", "scrape vLLM processes and DCGM on hosts", "Prometheus (VMs)",
             "`promtool check config`"),
    FileKind("prometheus/alerts.yml", "", "SLO, load, health and replica-count alerts (VMs)", "rule file",
             "`promtool check rules` + `promtool test rules`"),
    FileKind("grafana/", ".json", "dashboard", "Grafana: Dashboards > Import", "JSON + promtool-parsed queries"),
    FileKind("triton/", "config.pbtxt", "Triton model config (vLLM backend)", "`tritonserver --model-repository`",
             "structure"),
    FileKind("triton/", "model.json", "vLLM engine args for Triton", "(read by the vLLM backend)", "JSON parse"),
)


def describe(path: str) -> FileKind | None:
    # Most specific first: exact names before directory prefixes.
    for kind in sorted(FILE_KINDS, key=lambda k: -len(k.prefix) - len(k.suffix)):
        if path.startswith(kind.prefix) and path.endswith(kind.suffix):
            return kind
    return None


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def availability_text(plan: Plan, service: str, replicas: int) -> str:
    """The plan's modelled availability (instances failing at the clouds' single-instance SLA floor, spot by the
    spot model; docs/cost-model.md#on-demand-instances), with what it leaves out for a lone replica."""
    sp = next((s for s in plan.services if s.service == service), None)
    if replicas <= 1 and (sp is None or sp.availability is None or sp.availability >= 1.0):
        # a plan made before on-demand failures were modelled claims 1.0 for a lone replica
        return "one replica: a drain, rollout or node failure is an outage (not covered by the plan's model)"
    if sp is None or sp.availability is None:
        return "not modelled"
    figure = f"{sp.availability:.6f} (instance failures and spot model, target {plan.availability_target:g})"
    if replicas <= 1:
        return f"{figure}; one replica: a drain or rollout is an outage too"
    return figure


def _apply_steps(cluster: Cluster, settings: DeploySettings, paths: set[str]) -> list[str]:
    f = cluster.folder
    ns = settings.namespace
    steps: list[str] = [f"### Cluster `{cluster.key}`", ""]
    if f"{f}/node-pools/eksctl-nodegroups.yaml" in paths:
        pools = f"eksctl create nodegroup -f {f}/node-pools/eksctl-nodegroups.yaml"
    elif f"{f}/node-pools/gke-node-pools.sh" in paths:
        pools = f"sh {f}/node-pools/gke-node-pools.sh"
    else:
        pools = f"label the existing nodes as {f}/node-pools/node-labels.yaml lists"
    steps += [
        f"1. Node pools (labels, taints and sizes from the plan): `{pools}`.",
        f"2. GPU operator: `kubectl create namespace {settings.gpu_operator_namespace}`, "
        f"`kubectl apply -f {f}/mig-parted-configmap.yaml`, then `helm install gpu-operator nvidia/gpu-operator "
        f"-n {settings.gpu_operator_namespace} -f {f}/gpu-operator-values.yaml`.",
    ]
    if has_mig(cluster):
        configs = sorted({node_group_mig_config(p.node_group) for p in cluster.pools} - {ALL_DISABLED})
        waits = "; ".join(
            "kubectl wait node -l " + shlex.quote(f"nvidia.com/mig.config={c}")
            + " --for=jsonpath='{.metadata.labels.nvidia\\.com/mig\\.config\\.state}'=success --timeout=30m"
            for c in configs
        )
        steps.append(f"   Wait for MIG on the MIG pools only (whole-GPU pools keep `{ALL_DISABLED}`): `{waits}`.")
    steps.append(
        f"3. Namespace and secrets (values never appear in this bundle): `kubectl apply -f {f}/kubernetes/"
        f"00-namespace.yaml`, `kubectl -n {ns} create secret generic {settings.secrets.hf_token.name} "
        f"--from-literal={settings.secrets.hf_token.key}=\"$HF_TOKEN\"`"
        + (
            f", `kubectl -n {ns} create secret generic {settings.secrets.api_key.name} "
            f"--from-literal={settings.secrets.api_key.key}=\"$VLLM_API_KEY\"`."
            if settings.secrets.require_api_key
            else "."
        )
    )
    missing = [w.model for w in cluster.weights if w.kind == "missing"]
    weights = f"4. Weights: `{settings.storage.mode}` storage"
    if "weights/upload.sh" in paths:
        weights += "; first `sh weights/upload.sh` (local checkpoints to their buckets)"
    if settings.storage.mode == "shared":
        weights += f"; the Jobs in `{f}/kubernetes/02-model-download.yaml` fill the shared volume once"
    else:
        weights += "; each pod's init container downloads its checkpoint into its own volume"
    steps.append(weights + " (`weights/sources.yaml` lists every source).")
    if missing:
        steps.append(
            "   **Not reachable from the cluster** (the pods stop in their init step until you set "
            f"`deploy.models` or `deploy.storage.bucket` and re-plan): {', '.join(missing)}."
        )
    steps.append(f"5. Serving: `kubectl apply -f {f}/kubernetes/`.")
    if any(p.startswith(f"{f}/autoscaling/keda") for p in paths):
        steps.append(f"6. Autoscaling (KEDA 2.x installed): `kubectl apply -f {f}/autoscaling/keda-scaledobjects.yaml`"
                     f" (queries {settings.prometheus_url}).")
    elif any(p.startswith(f"{f}/autoscaling/prometheus-adapter") for p in paths):
        steps.append("6. Autoscaling: `helm install prometheus-adapter prometheus-community/prometheus-adapter -f "
                     f"{f}/autoscaling/prometheus-adapter-values.yaml`.")
    if any(p.startswith(f"{f}/gateway/") for p in paths):
        gw = next(p for p in sorted(paths) if p.startswith(f"{f}/gateway/"))
        steps.append(f"7. Gateway (`{settings.gateway}`, parent `{settings.gateway_ref}`): `kubectl apply -f {gw}`;"
                     " clients call `<gateway>/<service>/v1/...`.")
    steps.append(f"8. Monitoring (Prometheus Operator): `kubectl apply -f {f}/monitoring/podmonitor.yaml -f "
                 f"{f}/monitoring/prometheusrule.yaml`, or plain Prometheus with `{f}/monitoring/prometheus.yml`.")
    return [*steps, ""]


def readme(plan: Plan, paths: list[str], settings: DeploySettings, clusters: list[Cluster]) -> str:
    path_set = set(paths)
    lines = [f"# Deploy bundle: {plan.name}", ""]
    lines += [
        f"Generated by `vlmopt plan` on {plan.created} from workload `{plan.workload}` ({plan.mode} mode).",
        "",
        "## What it costs",
        "",
        f"- {plan.cost.usd_per_hour:.2f} USD/h, {plan.cost.usd_per_month:.0f} USD/month: the node groups' prices"
        " below, each with its catalog source and date.",
    ]
    if plan.cost.expected_usd_per_hour is not None:
        lines.append(f"- Expected with spot replacements: {plan.cost.expected_usd_per_hour:.2f} USD/h (spot model).")
    if plan.baseline is not None:
        lines.append(f"- Baseline ({plan.baseline.description}): {plan.baseline.cost.usd_per_hour:.2f} USD/h.")
    lines += ["", _row(["node group", "GPU", "where", "market", "instances", "MIG layout", "USD/h", "price source"]),
              "|---|---|---|---|---|---|---|---|"]
    for g in plan.node_groups:
        layout = " + ".join(g.gpu_layout.mig_layout) if g.gpu_layout.mig_layout else "whole GPU"
        where = f"{g.cloud or 'fleet'} {g.region or ''} {g.instance_type or ''}".strip()
        lines.append(_row([g.name, g.gpu, where, g.market, str(g.instances), layout, f"{g.usd_per_hour:.2f}",
                           g.price_provenance.label()]))

    lines += ["", "## Services", "", _row(["service", "replicas", "availability", "request timeout", "derivation"]),
              "|---|---|---|---|---|"]
    for service in dict.fromkeys(s for c in clusters for s in c.services):
        replicas = sum(g.replicas for c in clusters for g in c.groups if g.service == service)
        t = next(c.timeouts[service] for c in clusters if service in c.timeouts)
        lines.append(_row([service, str(replicas), availability_text(plan, service, replicas), f"{t.request_s} s",
                           t.derivation]))
    lines += [
        "",
        "Failure policy (docs/deploy-bundle.md#failure-policy): connect timeout "
        f"{settings.timeouts.connect_s:g} s; up to {settings.timeouts.retries} retries, only of requests that never "
        "reached a replica (connection failures, 503 from the proxy), so no generation runs twice; a replica failing "
        "three times in a row is taken out for 30 s (Istio outlier detection, nginx max_fails); spot and on-demand "
        "replicas, and every variant, sit behind one pool Service, so losing one kind leaves the others serving.",
        "",
        "## Deployments",
        "",
        _row(["cluster", "deployment", "replicas (min-max)", "CPU / memory / shm", "grace (preStop + drain)",
              "capacity/replica (req/s)", "capacity source", "sizing"]),
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in clusters:
        for g in c.groups:
            s = g.size
            lines.append(_row([
                c.key, g.name, f"{g.replicas}-{g.max_replicas}",
                f"{s.cpu_quantity} / {s.memory_quantity} / {s.shm_quantity}",
                f"{g.shutdown.grace_s} s ({g.shutdown.prestop_s} + {g.shutdown.drain_s}): {g.shutdown.derivation}",
                f"{g.engine.capacity_rps:g}", g.engine.capacity_provenance.label(),
                g.size.derivation + (f"; {g.capacity_note}" if g.capacity_note else ""),
            ]))
    lines += ["", "## Apply on Kubernetes (one cluster per cloud and region, NVIDIA GPU operator)", ""]
    for c in clusters:
        lines += _apply_steps(c, settings, path_set)
    lines += ["## Other targets", ""]
    for p in sorted(x for x in paths if x.startswith("skypilot/")):
        service = p.removeprefix("skypilot/").removesuffix(".yaml")
        spec_service = next((s.service for s in plan.services if s.service.replace(" ", "-") == service), service)
        lines.append(f"- SkyPilot: `{shlex.join(serve_up_command(plan, spec_service, p, settings))}`")
    lines += [
        "- VMs: `vllm/*.sh` per slice with `CUDA_VISIBLE_DEVICES` and the port from `vllm/replicas.json`; "
        "`nginx/vlmopt.conf` in front; Prometheus with `prometheus/prometheus-static.yml`.",
        "- Triton: `triton/model_repository/`.",
        f"- MIG on VMs: `nvidia-mig-parted apply -f mig-parted/config.yaml -c <name>`; the Kubernetes clusters' "
        f"mig-manager reads the same layouts from `{MIG_CONFIGMAP}`.",
        "",
        "## What was checked, and what only a cluster can show",
        "",
        "Checked before this bundle was written: every pod template against the node pools above (labels, taints, "
        "GPU resources, allocatable CPU/memory of a full node, volume access modes, rollout and autoscaler bounds, "
        "shutdown timing). Not checkable here: image pulls, driver/operator versions, cloud quotas and spot capacity, "
        "bucket permissions, and latency under real traffic (docs/deploy-bundle.md#what-is-checked).",
        "",
        "## Files",
        "",
        "| file | what it is | how to apply | checked by |",
        "|---|---|---|---|",
    ]
    for path in sorted(paths):
        kind = describe(path)
        lines.append(_row([f"`{path}`", *((kind and (kind.purpose, kind.apply, kind.validator)) or ("", "", ""))]))
    return "\n".join(lines) + "\n"
