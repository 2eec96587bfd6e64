"""Failure policy derived from the plan's SLOs and the capacity's market: request timeouts, retries, grace periods,
vLLM's drain timeout and histogram buckets. One place, so every target (Gateway API, Istio, nginx, Kubernetes,
SkyPilot, the launchers) uses the same numbers and the bundle README can print them with their derivation.

docs/deploy-bundle.md#failure-policy gives the rules and their sources.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from vlmopt.schemas import ServicePlan
from vlmopt.schemas.deploy import DeploySettings

# Seconds a spot node gets between the provider's notice and the kill, per cloud, and the share of it pods get:
# - AWS: a two-minute interruption notice
#   (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html); the node is
#   cordoned and drained when the notice (or an earlier rebalance recommendation) arrives. Pods get it minus a margin
#   for the drain to start.
# - GCP: Spot VMs get a 30 s preemption notice; GKE's graceful node shutdown gives non-system pods the first 15 s
#   and system pods the last 15 s (https://cloud.google.com/kubernetes-engine/docs/concepts/spot-vms#termination).
SPOT_POD_GRACE_S = {"aws": 110, "gcp": 15}
# Without a known cloud (fleet, or a cloud not listed) spot is not planned; on-demand pods get this at most.
MAX_ON_DEMAND_GRACE_S = 600
# What the container needs after vLLM's drain: the process exits, logs flush.
EXIT_MARGIN_S = 3
DEFAULT_REQUEST_TIMEOUT_S = 600

# vLLM 0.32.0 default histogram bounds (vllm/v1/metrics/buckets.py); a family given in --custom-histogram-buckets
# replaces its defaults, so the SLO edges are added to these, not used alone.
VLLM_DEFAULT_BUCKETS: dict[str, tuple[float, ...]] = {
    "time_to_first_token": (
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
        160.0, 640.0, 2560.0,
    ),
    "request_latency": (
        0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
        1920.0, 7680.0,
    ),
    "inter_token_latency": (
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    ),
}
# Which bucket family holds the histogram each SLO key is alerted on (vllm/v1/metrics/loggers.py: TPOT uses the
# inter-token family).
SLO_BUCKET_FAMILY = {
    "ttft_p50_ms": "time_to_first_token",
    "ttft_p95_ms": "time_to_first_token",
    "tpot_p95_ms": "inter_token_latency",
    "e2el_p50_ms": "request_latency",
    "e2el_p95_ms": "request_latency",
}


@dataclass(frozen=True)
class ServiceTimeouts:
    """Per service: how long a request may take end to end, and how it got that number."""

    request_s: int
    connect_s: float
    retries: int
    derivation: str


def service_timeouts(service: ServicePlan | None, settings: DeploySettings) -> ServiceTimeouts:
    """request timeout = factor x the SLO's end-to-end budget: e2el p95 when the SLO has it, else TTFT p95 (or p50)
    + the allowed output tokens x TPOT p95; 600 s when the SLO says neither."""
    slo = service.slo if service else {}
    t = settings.timeouts
    if "e2el_p95_ms" in slo:
        budget = slo["e2el_p95_ms"] / 1000
        how = f"{t.request_factor:g} x e2el p95 {slo['e2el_p95_ms']:g} ms"
    elif "tpot_p95_ms" in slo:
        ttft = slo.get("ttft_p95_ms", slo.get("ttft_p50_ms", 0.0)) / 1000
        budget = ttft + t.output_tokens * slo["tpot_p95_ms"] / 1000
        how = (
            f"{t.request_factor:g} x (TTFT {ttft * 1000:g} ms + {t.output_tokens} tokens x TPOT p95 "
            f"{slo['tpot_p95_ms']:g} ms)"
        )
    else:
        how = f"{DEFAULT_REQUEST_TIMEOUT_S} s: the SLO has no e2el/TPOT key"
        return ServiceTimeouts(DEFAULT_REQUEST_TIMEOUT_S, t.connect_s, t.retries, how)
    request = max(10, math.ceil(t.request_factor * budget))
    return ServiceTimeouts(request, t.connect_s, t.retries, how)


@dataclass(frozen=True)
class Shutdown:
    """terminationGracePeriodSeconds = preStop + vLLM drain (--shutdown-timeout) + exit margin."""

    grace_s: int
    prestop_s: int
    drain_s: int
    derivation: str


def shutdown(market: str, clouds: set[str], request_timeout_s: int, settings: DeploySettings) -> Shutdown:
    """Spot pods must finish inside the shortest spot notice of the clouds they run on; on-demand pods may drain
    for as long as a request can take (capped)."""
    if market == "spot":
        known = [SPOT_POD_GRACE_S[c] for c in clouds if c in SPOT_POD_GRACE_S]
        grace = min(known) if known else min(SPOT_POD_GRACE_S.values())
        where = ", ".join(sorted(clouds)) or "unknown cloud"
        how = f"spot notice ({where}): pods get {grace} s"
    else:
        grace = min(MAX_ON_DEMAND_GRACE_S, settings.timeouts.prestop_s + request_timeout_s + EXIT_MARGIN_S)
        how = f"on-demand: preStop + request timeout {request_timeout_s} s + {EXIT_MARGIN_S} s, at most 600 s"
    prestop = min(settings.timeouts.prestop_s, grace // 3)
    drain = max(1, grace - prestop - EXIT_MARGIN_S)
    return Shutdown(grace, prestop, drain, how)


def histogram_buckets(slos: list[dict[str, float]]) -> dict[str, list[float]]:
    """vLLM's default buckets plus every SLO threshold (seconds) as an edge, for the families an SLO touches, so
    `histogram_quantile` is exact at the threshold the alert compares with."""
    edges: dict[str, set[float]] = {}
    for slo in slos:
        for key, limit_ms in slo.items():
            family = SLO_BUCKET_FAMILY.get(key)
            if family is not None:
                edges.setdefault(family, set()).add(round(limit_ms / 1000, 6))
    return {
        family: sorted(set(VLLM_DEFAULT_BUCKETS[family]) | added) for family, added in sorted(edges.items())
    }


def frontend_args(
    shutdown_s: int | None, api_server_count: int, buckets: dict[str, list[float]]
) -> list[str]:
    """Server flags set per deployment, not per engine config (vLLM 0.32 `vllm serve`)."""
    args: list[str] = []
    if shutdown_s is not None:
        # 0 (the default) aborts in-flight requests on SIGTERM; >0 drains them for up to this long.
        args += ["--shutdown-timeout", str(shutdown_s)]
    if api_server_count > 1:
        args += ["--api-server-count", str(api_server_count)]
    if buckets:
        args += ["--custom-histogram-buckets", json.dumps(buckets, separators=(",", ":"))]
    return args
