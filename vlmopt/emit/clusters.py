"""The plan split into Kubernetes clusters, one per (cloud, region), with everything each Deployment needs decided:
node pools and their size bounds, pod sizes, shutdown timing, replica bounds, the A/B challenger and the weights.

Every cluster emitter (kubernetes.py, node_pools.py, gateway.py, monitoring.py) reads a `Cluster`, so the numbers
in one file agree with the others, and the placement check (placement.py) verifies them from the files alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from vlmopt.schemas import NodeGroup, Plan, Provenance, Replica, ServicePlan
from vlmopt.schemas.deploy import DeploySettings

from ._common import EmitError, k8s_name
from .groups import EngineConfig, ReplicaGroup, replica_groups, service_plans, services_in_order
from .policy import ServiceTimeouts, Shutdown, frontend_args, histogram_buckets, service_timeouts, shutdown
from .sizing import PodSize, group_pod_size
from .weights import WeightSource, weight_source

FLEET = "fleet"


@dataclass
class NodePool:
    """One node group of the plan as a node pool: its size bounds and the labels it puts on its nodes."""

    node_group: NodeGroup
    name: str
    min_nodes: int
    max_nodes: int


@dataclass
class DeployGroup:
    """One Deployment: a replica group (or the A/B challenger carved out of one) with its deploy-time decisions."""

    name: str
    group: ReplicaGroup
    variant: str
    model: str
    arm: str  # 'a' (the plan's variant) or 'b' (the A/B challenger)
    replicas: int
    max_replicas: int
    size: PodSize
    shutdown: Shutdown
    frontend: list[str]
    weights: WeightSource
    capacity_note: str = ""

    @property
    def engine(self) -> EngineConfig:
        return self.group.engine

    @property
    def service(self) -> str:
        return self.group.service

    @property
    def market(self) -> str:
        return self.group.market

    @property
    def node_groups(self) -> list[NodeGroup]:
        return self.group.node_groups


@dataclass
class Cluster:
    cloud: str | None
    region: str | None
    pools: list[NodePool]
    groups: list[DeployGroup] = field(default_factory=list)
    timeouts: dict[str, ServiceTimeouts] = field(default_factory=dict)
    service_plans: dict[str, ServicePlan] = field(default_factory=dict)

    @property
    def key(self) -> str:
        if not self.cloud:
            return FLEET
        return k8s_name(self.cloud, self.region or "")

    @property
    def folder(self) -> str:
        return f"clusters/{self.key}"

    @property
    def services(self) -> list[str]:
        seen: dict[str, None] = {}
        for g in self.groups:
            seen.setdefault(g.service, None)
        return list(seen)

    @property
    def weights(self) -> list[WeightSource]:
        seen: dict[str, WeightSource] = {}
        for g in self.groups:
            seen.setdefault(g.weights.model, g.weights)
        return list(seen.values())

    @property
    def clouds(self) -> set[str]:
        return {self.cloud} if self.cloud else set()


def split_by_cluster(plan: Plan) -> list[tuple[str | None, str | None, list[NodeGroup]]]:
    """Node groups grouped by (cloud, region) in plan order: a Kubernetes cluster lives in one region."""
    keys: dict[tuple[str | None, str | None], list[NodeGroup]] = {}
    for ng in plan.node_groups:
        cloud = ng.cloud.lower() if ng.cloud else None
        keys.setdefault((cloud, ng.region if cloud else None), []).append(ng)
    return [(cloud, region, groups) for (cloud, region), groups in keys.items()]


def _max_nodes(ng: NodeGroup, settings: DeploySettings) -> int:
    # A fleet has the machines it has: no node pool API to add more.
    if settings.autoscaling.engine == "none" or not ng.cloud:
        return ng.instances
    return max(ng.instances, math.ceil(ng.instances * settings.autoscaling.max_replicas_factor))


def _slices_per_node(ng: NodeGroup, rg: ReplicaGroup) -> int:
    e = rg.engine
    per_gpu = sum(
        1 for r in ng.gpu_layout.replicas if (r.service, r.variant, r.slice) == (e.service, e.variant, e.slice)
    )
    return per_gpu * ng.gpus_per_instance


def _replica_of(rg: ReplicaGroup) -> dict[str, Replica]:
    e = rg.engine
    return {
        ng.name: next(
            r for r in ng.gpu_layout.replicas if (r.service, r.variant, r.slice) == (e.service, e.variant, e.slice)
        )
        for ng in rg.node_groups
    }


def build_cluster(
    plan: Plan, cloud: str | None, region: str | None, node_groups: list[NodeGroup], settings: DeploySettings
) -> Cluster:
    sub_plan = plan.model_copy(update={"node_groups": node_groups})
    pools = {
        ng.name: NodePool(ng, k8s_name(ng.name, max_len=40), ng.instances, _max_nodes(ng, settings))
        for ng in node_groups
    }
    cluster = Cluster(cloud, region, list(pools.values()), service_plans=service_plans(plan))
    for service in services_in_order(sub_plan):
        cluster.timeouts[service] = service_timeouts(cluster.service_plans.get(service), settings)
    slos = [sp.slo for sp in plan.services]
    buckets = histogram_buckets(slos)
    for rg in replica_groups(sub_plan, settings):
        timeouts = cluster.timeouts[rg.service]
        stop = shutdown(rg.market, cluster.clouds, timeouts.request_s, settings)
        size = group_pod_size(rg.node_groups, _replica_of(rg), settings)
        capacity = sum(pools[ng.name].max_nodes * _slices_per_node(ng, rg) for ng in rg.node_groups)
        model = rg.engine.server_args.model
        cluster.groups.append(
            DeployGroup(
                name=rg.name,
                group=rg,
                variant=rg.engine.variant,
                model=model,
                arm="a",
                replicas=rg.replicas,
                max_replicas=capacity if settings.autoscaling.engine != "none" else rg.replicas,
                size=size,
                shutdown=stop,
                frontend=frontend_args(stop.drain_s, size.api_server_count, buckets),
                weights=weight_source(model, cloud, settings),
            )
        )
    if settings.ab is not None and settings.ab.service in cluster.services:
        _carve_challenger(cluster, settings)
    return cluster


def _carve_challenger(cluster: Cluster, settings: DeploySettings) -> None:
    """Move k of the service's replicas (on the slices of its largest group) to the challenger variant:
    k = the split's share of the service's replicas, at least 1, leaving the plan's variant at least 1 there."""
    ab = settings.ab
    assert ab is not None
    own = [g for g in cluster.groups if g.service == ab.service]
    total = sum(g.replicas for g in own)
    host = max(own, key=lambda g: (g.replicas, g.market == "on_demand"))
    k = max(1, round(total * ab.weight_percent / 100))
    if host.replicas - k < 1:
        raise EmitError(
            f"ab: {ab.service} has {host.replicas} replica(s) in its largest group {host.name}; an A/B split of "
            f"{ab.weight_percent:g}% needs {k} challenger replica(s) and at least one of the plan's variant beside them"
        )
    host.replicas -= k
    host.max_replicas -= k
    engine = host.engine
    challenger_args = engine.server_args.model_copy(update={"model": ab.model})
    challenger_engine = replace(
        engine,
        variant=ab.variant,
        server_args=challenger_args,
        capacity_provenance=Provenance(
            kind="estimated",
            source=f"assumed equal to {engine.variant} on {engine.gpu} {engine.slice} (A/B challenger, not measured)",
        ),
    )
    challenger_group = ReplicaGroup(
        engine=challenger_engine, market=host.market, replicas=k, node_groups=list(host.node_groups)
    )
    cluster.groups.append(
        replace(
            host,
            name=k8s_name(ab.service, ab.variant, engine.gpu, engine.slice, host.market.replace("_", "-")),
            group=challenger_group,
            variant=ab.variant,
            model=ab.model,
            arm="b",
            replicas=k,
            max_replicas=k,
            weights=weight_source(ab.model, cluster.cloud, settings),
            capacity_note="A/B challenger: fixed replicas on slices taken from " + host.name,
        )
    )


def build_clusters(plan: Plan, settings: DeploySettings) -> list[Cluster]:
    clusters = [
        build_cluster(plan, cloud, region, groups, settings) for cloud, region, groups in split_by_cluster(plan)
    ]
    if settings.ab is not None:
        if settings.gateway == "none":
            raise EmitError("ab: an A/B split needs a gateway (deploy.gateway: gateway-api or istio)")
        if not any(settings.ab.service in c.services for c in clusters):
            raise EmitError(f"ab: service {settings.ab.service!r} is not in the plan")
    keys = [c.key for c in clusters]
    if len(set(keys)) != len(keys):
        raise EmitError(f"two (cloud, region) pairs map to the same cluster folder: {keys}")
    return clusters
