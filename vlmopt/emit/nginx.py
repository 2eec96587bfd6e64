"""NGINX: a `least_conn` upstream per service over every replica (host:port), and a server proxying /v1 to it.

For VM / fleet deployments where replicas run as processes (vllm/*.sh, ports from vllm/replicas.json). The file
goes inside `http {}` (e.g. /etc/nginx/conf.d/). Token streams (SSE) flow unbuffered and uncompressed; a replica
that refuses connections is skipped within seconds and marked failed for a while (passive circuit breaking); a
request that never reached a replica is tried on the next one; the read timeout is the service's SLO-derived
request timeout (policy.py, docs/deploy-bundle.md#failure-policy).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vlmopt.schemas import Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, GENERATED_BY
from .groups import ReplicaEndpoint, replica_endpoints, replica_host, service_plans, services_in_order
from .policy import service_timeouts

NGINX_PATH = "nginx/vlmopt.conf"
_BARE_TOKEN = re.compile(r"^[A-Za-z0-9_./:$=\-]+$")


@dataclass
class Directive:
    """One NGINX directive, with a block when `children` is not None."""

    name: str
    args: Sequence[str | int] = ()
    children: list[Directive] | None = None
    comment: str | None = None


def _quote(arg: str | int) -> str:
    text = str(arg)
    if _BARE_TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(directives: Sequence[Directive], indent: int = 0) -> str:
    out: list[str] = []
    pad = "    " * indent
    for d in directives:
        if d.comment:
            out.append(f"{pad}# {d.comment}")
        head = " ".join([d.name, *(_quote(a) for a in d.args)])
        if d.children is None:
            out.append(f"{pad}{head};")
        else:
            out.append(f"{pad}{head} {{")
            out.append(render(d.children, indent + 1).rstrip("\n"))
            out.append(f"{pad}}}")
    return "\n".join(out) + "\n"


def upstream_name(service: str) -> str:
    return "vlmopt_" + re.sub(r"[^A-Za-z0-9_]", "_", service)


def _weights(endpoints: list[ReplicaEndpoint]) -> dict[str, int]:
    """Integer weights proportional to each replica group's capacity, so a 3g slice gets more than a 1g slice."""
    smallest = min(ep.group.engine.capacity_rps for ep in endpoints) or 1.0
    return {ep.group.name: max(1, round(ep.group.engine.capacity_rps / smallest)) for ep in endpoints}


def nginx_directives(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> list[Directive]:
    endpoints = replica_endpoints(plan, settings)
    plans = service_plans(plan)
    directives: list[Directive] = []
    for index, service in enumerate(services_in_order(plan)):
        own = [ep for ep in endpoints if ep.group.service == service]
        if not own:
            continue
        weights = _weights(own)
        timeouts = service_timeouts(plans.get(service), settings)
        servers = [
            Directive(
                "server",
                [
                    f"{replica_host(ep, settings)}:{ep.port}",
                    f"weight={weights[ep.group.name]}",
                    # 3 failures within 30 s take the replica out for 30 s.
                    "max_fails=3",
                    "fail_timeout=30s",
                ],
            )
            for ep in own
        ]
        upstream = upstream_name(service)
        directives.append(
            Directive(
                "upstream",
                [upstream],
                [Directive("least_conn"), *servers, Directive("keepalive", [32])],
                comment=f"{service}: {len(own)} replicas; weight = capacity relative to the smallest replica",
            )
        )
        proxy = [
            Directive("proxy_pass", [f"http://{upstream}"]),
            Directive("proxy_http_version", ["1.1"]),
            Directive("proxy_set_header", ["Connection", ""]),
            Directive("proxy_set_header", ["Host", "$host"]),
            Directive("proxy_set_header", ["X-Forwarded-For", "$proxy_add_x_forwarded_for"]),
            # Server-sent events: pass every token as it comes (no buffering, no compression, no cache).
            Directive("proxy_buffering", ["off"]),
            Directive("proxy_cache", ["off"]),
            Directive("gzip", ["off"]),
            Directive("proxy_connect_timeout", [f"{timeouts.connect_s:g}s"]),
            Directive(
                "proxy_read_timeout",
                [f"{timeouts.request_s}s"],
                comment=f"request timeout: {timeouts.derivation}",
            ),
            Directive("proxy_send_timeout", ["60s"]),
            # Connection failures and 503s are retried on the next replica; nginx never re-sends a POST that
            # reached a replica (non_idempotent is not set), so a generation never runs twice.
            Directive("proxy_next_upstream", ["error", "timeout", "http_503"]),
            Directive("proxy_next_upstream_tries", [timeouts.retries + 1]),
        ]
        directives.append(
            Directive(
                "server",
                children=[
                    Directive("listen", [settings.nginx_listen_port + index]),
                    Directive("client_max_body_size", ["64m"], comment="base64 images make requests large"),
                    Directive("location", ["/v1/"], proxy),
                    Directive("location", ["=", "/health"], [Directive("proxy_pass", [f"http://{upstream}"])]),
                ],
                comment=f"{service} on port {settings.nginx_listen_port + index}",
            )
        )
    return directives


def emit_nginx(plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS) -> dict[str, str]:
    header = (
        f"# {GENERATED_BY} ({plan.name}); include inside http {{}}. Hosts come from the deploy settings'\n"
        "# replica_hosts (workload `deploy:` block or --deploy-settings); unset, they are <node-group>-<n>.\n"
    )
    return {NGINX_PATH: header + render(nginx_directives(plan, settings))}
