"""Failure policy at the edge of each cluster: a Gateway API HTTPRoute per service, or with `gateway: istio` a
VirtualService + DestinationRule (outlier detection = circuit breaking, connection-pool limits, least-request
balancing). Timeouts and retries come from policy.py, derived from the service's SLO.

Routing: clients call `<gateway>/<service>/v1/...`; the route strips the `/<service>` prefix. The backend is the
service's pool Service (all replicas: when spot pods go, on-demand ones keep serving; when a variant's pods go, the
other variants' do). With an A/B split the route weights the two arm Services instead.

Gateway API channels: `timeouts` is Standard since v1.2; `retry` (GEP-1731) was Experimental from v1.2 and is
Standard since v1.7 (https://gateway-api.sigs.k8s.io/guides/user-guides/http-retries/). With a Standard-channel
install older than v1.7 the API server prunes or rejects `retry`: install the Experimental CRDs, or drop it.
"""

from __future__ import annotations

import math
from typing import Any

from vlmopt.schemas import Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import GENERATED_BY, dump_yaml_documents, k8s_name
from .clusters import Cluster, DeployGroup
from .kubernetes import PART_OF, service_name

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
ISTIO_API_VERSION = "networking.istio.io/v1"


def _parent_ref(settings: DeploySettings) -> dict[str, str]:
    namespace, _, name = settings.gateway_ref.rpartition("/")
    ref = {"name": name}
    if namespace:
        ref["namespace"] = namespace
    return ref


def _backends(cluster: Cluster, service: str, settings: DeploySettings) -> list[tuple[str, int]]:
    """(Service name, weight): the pool alone, or the A/B arms at the configured split."""
    groups = [g for g in cluster.groups if g.service == service]
    if not any(g.arm == "b" for g in groups):
        return [(service_name(service), 1)]
    assert settings.ab is not None
    b = round(settings.ab.weight_percent * 100)
    return [(service_name(service, "a"), 10000 - b), (service_name(service, "b"), b)]


def http_route(plan: Plan, cluster: Cluster, service: str, settings: DeploySettings) -> dict[str, Any]:
    t = cluster.timeouts[service]
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": f"/{service}/"}}],
        "filters": [
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
        ],
        "backendRefs": [
            {"name": name, "port": settings.port, "weight": weight}
            for name, weight in _backends(cluster, service, settings)
        ],
        # request: the whole exchange, streamed tokens included; backendRequest: one try.
        "timeouts": {"request": f"{t.request_s}s", "backendRequest": f"{t.request_s}s"},
    }
    if t.retries:
        # 503 = the gateway found no ready endpoint or the connection failed: the request never reached vLLM, so a
        # retry cannot run a generation twice. Never retried: 5xx from vLLM itself and timeouts.
        rule["retry"] = {"codes": [503], "attempts": t.retries, "backoff": "100ms"}
    spec: dict[str, Any] = {"parentRefs": [_parent_ref(settings)], "rules": [rule]}
    if settings.hostnames:
        spec["hostnames"] = list(settings.hostnames)
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": k8s_name(service), "namespace": settings.namespace, "labels": {PART_OF: "vlmopt"}},
        "spec": spec,
    }


def _max_requests(groups: list[DeployGroup]) -> int:
    """What the replicas can hold at once: running (max_num_seqs) plus as many waiting, over the scaled-out count."""
    total = 0
    for g in groups:
        seqs = g.engine.server_args.max_num_seqs or 256
        total += 2 * seqs * g.max_replicas
    return max(total, 1)


def destination_rule(cluster: Cluster, host_service: str, groups: list[DeployGroup], settings: DeploySettings) -> dict:
    """Circuit breaking for one Service: a replica answering 5xx three times in a row is ejected for 30 s (at most
    half the replicas at once, so the breaker never empties the pool); pending requests beyond what the replicas can
    queue fail fast instead of piling up; retries are bounded to a fifth of the active requests (a retry budget)."""
    max_requests = _max_requests(groups)
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "DestinationRule",
        "metadata": {"name": host_service, "namespace": settings.namespace, "labels": {PART_OF: "vlmopt"}},
        "spec": {
            "host": f"{host_service}.{settings.namespace}.svc.cluster.local",
            "trafficPolicy": {
                # Bigger slices finish sooner: least-request sends them more.
                "loadBalancer": {"simple": "LEAST_REQUEST"},
                "connectionPool": {
                    "tcp": {"connectTimeout": f"{int(settings.timeouts.connect_s * 1000)}ms"},
                    "http": {
                        "http1MaxPendingRequests": max_requests,
                        "http2MaxRequests": max_requests,
                        "maxRetries": max(1, math.ceil(max_requests / 5)),
                    },
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 3,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 50,
                },
            },
        },
    }


def virtual_service(plan: Plan, cluster: Cluster, service: str, settings: DeploySettings) -> dict:
    t = cluster.timeouts[service]
    route: dict[str, Any] = {
        "match": [{"uri": {"prefix": f"/{service}/"}}],
        "rewrite": {"uri": "/"},
        "route": [
            {
                "destination": {
                    "host": f"{name}.{settings.namespace}.svc.cluster.local",
                    "port": {"number": settings.port},
                },
                "weight": weight,
            }
            for name, weight in _percent(_backends(cluster, service, settings))
        ],
        "timeout": f"{t.request_s}s",
    }
    if t.retries:
        # Only failures before the request reached a replica (see http_route).
        route["retries"] = {
            "attempts": t.retries,
            "perTryTimeout": f"{t.request_s}s",
            "retryOn": "connect-failure,refused-stream,503",
        }
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": {"name": k8s_name(service), "namespace": settings.namespace, "labels": {PART_OF: "vlmopt"}},
        "spec": {"hosts": list(settings.hostnames) or ["*"], "gateways": [settings.gateway_ref], "http": [route]},
    }


def _percent(backends: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Istio weights are integer percentages summing to 100."""
    total = sum(w for _, w in backends)
    shares = [(name, round(100 * w / total)) for name, w in backends]
    drift = 100 - sum(w for _, w in shares)
    name, weight = shares[0]
    shares[0] = (name, weight + drift)
    return shares


def emit_cluster_gateway(plan: Plan, cluster: Cluster, settings: DeploySettings) -> dict[str, str]:
    header = [f"{GENERATED_BY} ({plan.name}); kubectl apply -f <this file>"]
    if settings.gateway == "gateway-api":
        docs = [http_route(plan, cluster, s, settings) for s in cluster.services]
        return {f"{cluster.folder}/gateway/httproutes.yaml": dump_yaml_documents(docs, header)}
    if settings.gateway == "istio":
        docs: list[dict] = []
        for service in cluster.services:
            groups = [g for g in cluster.groups if g.service == service]
            docs.append(virtual_service(plan, cluster, service, settings))
            for name, _ in _backends(cluster, service, settings):
                arm = name.rsplit("-", 1)[-1] if name != service_name(service) else None
                own = [g for g in groups if arm is None or g.arm == arm]
                docs.append(destination_rule(cluster, name, own, settings))
        return {f"{cluster.folder}/gateway/istio.yaml": dump_yaml_documents(docs, header)}
    return {}
