"""NGINX upstream + server: `nginx -t` on a full config that includes the emitted file (temp prefix, no daemon)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.unit.plan_fixtures import mixed_plan, node_groups, require_tool
from vlmopt.emit import DeploySettings, EmitError, emit_nginx
from vlmopt.emit.nginx import NGINX_PATH, Directive, render, upstream_name

# nginx resolves upstream host names while testing the config: give each node group's instances loopback IPs.
HOSTS = {g.name: [f"127.0.{i}.{n + 1}" for n in range(g.instances)] for i, g in enumerate(node_groups(), start=1)}


def nginx_test(conf_file: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    nginx = require_tool("nginx")
    temp_dirs = ["client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path"]
    main = [
        Directive("pid", [str(tmp_path / "nginx.pid")]),
        Directive("error_log", [str(tmp_path / "error.log")]),
        Directive("events", children=[]),
        Directive(
            "http",
            children=[
                *(Directive(d, [str(tmp_path / d)]) for d in temp_dirs),
                Directive("access_log", [str(tmp_path / "access.log")]),
                Directive("include", [str(conf_file)]),
            ],
        ),
    ]
    (tmp_path / "nginx.conf").write_text(render(main))
    return subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_emitted_config_passes_nginx_t(tmp_path: Path) -> None:
    text = emit_nginx(mixed_plan(), DeploySettings(replica_hosts=HOSTS))[NGINX_PATH]
    conf = tmp_path / "vlmopt.conf"
    conf.write_text(text)
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check is real: drop one semicolon and nginx -t fails."""
    text = emit_nginx(mixed_plan(), DeploySettings(replica_hosts=HOSTS))[NGINX_PATH]
    conf = tmp_path / "vlmopt.conf"
    conf.write_text(text.replace("least_conn;", "least_conn", 1))
    result = nginx_test(conf, tmp_path)
    assert result.returncode != 0


def test_least_conn_upstream_lists_every_replica_with_capacity_weights() -> None:
    text = emit_nginx(mixed_plan(), DeploySettings(replica_hosts=HOSTS))[NGINX_PATH]
    chat = text.split(f"upstream {upstream_name('chat')} {{")[1].split("}")[0]
    docs = text.split(f"upstream {upstream_name('docs')} {{")[1].split("}")[0]
    assert "least_conn;" in chat and "least_conn;" in docs
    # chat: (1 x 3g + 1 x 2g) per H100 x 5 H100s + 2 x 3g per A100 x 8 A100s = 26 replicas
    assert chat.count("server ") == 26
    assert docs.count("server ") == 2 * 5 + 2
    # H100 on-demand instance 0: four replicas on ports 8000-8003 of one host.
    assert "server 127.0.1.1:8000 weight=2" in chat  # 3g.40gb, 3.2 req/s vs 1.6 -> weight 2
    assert "server 127.0.1.1:8001 weight=1" in chat
    assert "server 127.0.1.1:8002 weight=1" in docs


def test_server_proxies_v1_with_streaming_settings() -> None:
    text = emit_nginx(mixed_plan())[NGINX_PATH]
    for directive in (
        "proxy_buffering off;",
        "gzip off;",
        "proxy_connect_timeout 2s;",
        "proxy_next_upstream error timeout http_503;",
        "proxy_next_upstream_tries 3;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "location /v1/ {",
        "listen 8080;",
        "listen 8081;",
    ):
        assert directive in text, directive
    # chat's SLO has no e2el/TPOT key: the default; docs: 3 x its 8 s e2el p95
    chat, docs = text.split("# docs on port")
    assert "proxy_read_timeout 600s;" in chat and "proxy_read_timeout 24s;" in docs
    # default host names: <node-group>-<instance>
    assert "server h100-mig-od-0:8000" in text and "server a100-mig-spot-0:8015" in text


def test_replica_hosts_from_the_settings_reach_the_upstreams() -> None:
    text = emit_nginx(mixed_plan(), DeploySettings(replica_hosts={"l4-whole-od": ["10.0.3.1", "10.0.3.2"]}))[NGINX_PATH]
    assert "server 10.0.3.1:8000" in text and "server 10.0.3.2:8000" in text and "l4-whole-od-0" not in text


def test_too_few_hosts_for_a_node_group_is_an_error() -> None:
    with pytest.raises(EmitError, match="h100-mig-spot"):
        emit_nginx(mixed_plan(), DeploySettings(replica_hosts={"h100-mig-spot": ["10.0.0.1"]}))


def test_render_quotes_only_when_needed() -> None:
    text = render([Directive("server", children=[Directive("return", [200, "ok done"]), Directive("x", ["a;b"])])])
    assert 'return 200 "ok done";' in text and 'x "a;b";' in text
