"""Deploy settings as a file contract: every setting changes what the bundle says (one case per setting, each
naming the file it must reach), settings come from the workload's `deploy:` block or `--deploy-settings`, and bad
settings stop `vlmopt plan` with exit code 2 and one line, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.bundle_fixtures import BUCKETS
from tests.unit.plan_fixtures import mixed_plan, multi_cloud_plan
from vlmopt.cli import app
from vlmopt.emit import emit_all
from vlmopt.paths import data_file
from vlmopt.schemas.deploy import DeploySettings

runner = CliRunner()
AWS = "clusters/aws-us-east-1"
AB = {"service": "chat", "variant": "fp8", "model": "Org/chat-fp8", "weight_percent": 10}
BASE: dict[str, Any] = {"storage": {"bucket": BUCKETS}}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _emit(extra: dict) -> dict[str, str]:
    return emit_all(multi_cloud_plan(), DeploySettings.model_validate(_merge(BASE, extra)))


@pytest.fixture(scope="module")
def baseline() -> dict[str, str]:
    return _emit({})


# (setting, value, file it must reach, text that must appear there)
CASES: list[tuple[str, dict, str, str]] = [
    ("image", {"image": "registry.example/vllm:v0.32.0-patched"}, f"{AWS}/kubernetes/service-chat.yaml",
     "image: registry.example/vllm:v0.32.0-patched"),
    ("image (SkyPilot)", {"image": "registry.example/vllm:v1"}, "skypilot/chat.yaml",
     "docker:registry.example/vllm:v1"),
    ("namespace", {"namespace": "serving"}, f"{AWS}/kubernetes/00-namespace.yaml", "name: serving"),
    ("port", {"port": 9000}, f"{AWS}/kubernetes/service-chat.yaml", "containerPort: 9000"),
    ("secrets.hf_token", {"secrets": {"hf_token": {"name": "hub-creds", "key": "t"}}},
     f"{AWS}/kubernetes/service-chat.yaml", "name: hub-creds"),
    ("secrets.api_key", {"secrets": {"api_key": {"name": "gw-key", "key": "k"}}},
     f"{AWS}/kubernetes/service-docs.yaml", "name: gw-key"),
    ("secrets.require_api_key", {"secrets": {"require_api_key": False}}, "skypilot/docs.yaml",
     "--secret HF_TOKEN skypilot/docs.yaml"),
    ("storage.mode", {"storage": {"mode": "shared", "efs_file_system_id": "fs-0a1b2c3d4e5f60718"}},
     f"{AWS}/kubernetes/01-model-storage.yaml", "fileSystemId: fs-0a1b2c3d4e5f60718"),
    ("storage.efs_file_system_id", {"storage": {"mode": "shared", "efs_file_system_id": "fs-99aa88bb77cc66dd5"}},
     f"{AWS}/kubernetes/01-model-storage.yaml", "fileSystemId: fs-99aa88bb77cc66dd5"),
    ("storage.storage_class", {"storage": {"storage_class": {"aws": "gp3-encrypted"}}},
     f"{AWS}/kubernetes/service-chat.yaml", "storageClassName: gp3-encrypted"),
    ("storage.size_gib", {"storage": {"size_gib": 333}}, f"{AWS}/kubernetes/service-chat.yaml", "storage: 333Gi"),
    ("storage.bucket", {"storage": {"bucket": {"aws": "s3://other-bucket/models"}}}, "weights/upload.sh",
     "s3://other-bucket/models/qwen2.5-vl-3b/fp8"),
    ("storage.service_account", {"storage": {"service_account": "weights-reader"}},
     f"{AWS}/kubernetes/service-chat.yaml", "serviceAccountName: weights-reader"),
    ("models", {"models": {"variants/qwen2.5-vl-3b/fp8": "gs://vlm/fp8"}}, "weights/sources.yaml", "gs://vlm/fp8"),
    ("replica_hosts", {"replica_hosts": {"l4-whole-od": ["10.1.2.3", "10.1.2.4"]}}, "nginx/vlmopt.conf",
     "server 10.1.2.3:8000"),
    ("replica_hosts (prometheus)", {"replica_hosts": {"l4-whole-od": ["10.1.2.3", "10.1.2.4"]}},
     "prometheus/prometheus-static.yml", "10.1.2.3:8000"),
    ("autoscaling.engine", {"autoscaling": {"engine": "hpa"}}, f"{AWS}/autoscaling/prometheus-adapter-values.yaml",
     "vllm_num_requests_waiting"),
    ("autoscaling.waiting_requests_per_replica", {"autoscaling": {"waiting_requests_per_replica": 7}},
     f"{AWS}/autoscaling/keda-scaledobjects.yaml", "threshold: '7'"),
    ("autoscaling.max_replicas_factor", {"autoscaling": {"max_replicas_factor": 3}},
     f"{AWS}/node-pools/eksctl-nodegroups.yaml", "maxSize: 9"),
    ("autoscaling.scale_down_delay_s", {"autoscaling": {"scale_down_delay_s": 1234}},
     f"{AWS}/autoscaling/keda-scaledobjects.yaml", "stabilizationWindowSeconds: 1234"),
    ("gateway", {"gateway": "istio"}, f"{AWS}/gateway/istio.yaml", "kind: DestinationRule"),
    ("gateway_ref", {"gateway_ref": "edge/public-gw"}, f"{AWS}/gateway/httproutes.yaml", "namespace: edge"),
    ("hostnames", {"hostnames": ["vlm.example.com"]}, f"{AWS}/gateway/httproutes.yaml", "vlm.example.com"),
    ("ab", {"ab": AB}, f"{AWS}/gateway/httproutes.yaml", "name: chat-b"),
    ("ab (deployment)", {"ab": AB}, f"{AWS}/kubernetes/service-chat.yaml", "/models/Org/chat-fp8"),
    ("timeouts.connect_s", {"timeouts": {"connect_s": 4}}, "nginx/vlmopt.conf", "proxy_connect_timeout 4s;"),
    ("timeouts.output_tokens", {"timeouts": {"output_tokens": 100}}, "README.md", "100 tokens"),
    ("timeouts.request_factor", {"timeouts": {"request_factor": 5}}, "nginx/vlmopt.conf", "proxy_read_timeout 40s;"),
    ("timeouts.retries", {"timeouts": {"retries": 4}}, f"{AWS}/gateway/httproutes.yaml", "attempts: 4"),
    ("timeouts.prestop_s", {"timeouts": {"prestop_s": 9}}, f"{AWS}/kubernetes/service-chat.yaml", "- '9'"),
    ("prometheus_url", {"prometheus_url": "http://thanos.obs:10902"}, f"{AWS}/autoscaling/keda-scaledobjects.yaml",
     "serverAddress: http://thanos.obs:10902"),
    ("prometheus_selector_labels", {"prometheus_selector_labels": {"prometheus": "main"}},
     f"{AWS}/monitoring/podmonitor.yaml", "prometheus: main"),
    ("cluster_name", {"cluster_name": "prod-gpu"}, f"{AWS}/node-pools/eksctl-nodegroups.yaml", "name: prod-gpu"),
    ("gcp_project", {"gcp_project": "my-proj"}, "clusters/gcp-us-east4/node-pools/gke-node-pools.sh",
     "--project=my-proj"),
    ("shm_gib", {"shm_gib": 1.5}, f"{AWS}/kubernetes/service-chat.yaml", "sizeLimit: 1536Mi"),
    ("mig_gpu_memory_utilization", {"mig_gpu_memory_utilization": 0.85}, "vllm/chat--awq--h100-sxm-80gb--3g.40gb.json",
     '"0.9"'),
    ("node_reserve_cpu", {"node_reserve_cpu": 1.5}, f"{AWS}/kubernetes/service-docs.yaml", "cpu: 2420m"),
    ("node_reserve_memory_gib", {"node_reserve_memory_gib": 8}, f"{AWS}/kubernetes/service-docs.yaml",
     "memory: 7199Mi"),
    ("gpu_operator_namespace", {"gpu_operator_namespace": "nvidia-system"}, f"{AWS}/mig-parted-configmap.yaml",
     "namespace: nvidia-system"),
    ("dcgm_service", {"dcgm_service": "dcgm"}, f"{AWS}/monitoring/prometheus.yml", "regex: dcgm\n"),
    ("dcgm_port", {"dcgm_port": 9500}, "prometheus/prometheus-static.yml", ":9500"),
    ("nginx_listen_port", {"nginx_listen_port": 9090}, "nginx/vlmopt.conf", "listen 9090;"),
]


@pytest.mark.parametrize(("setting", "value", "path", "needle"), CASES, ids=[c[0] for c in CASES])
def test_each_setting_changes_the_emitted_output(
    baseline: dict[str, str], setting: str, value: dict, path: str, needle: str
) -> None:
    if setting == "timeouts.output_tokens":
        # only an SLO with TPOT and no e2el key uses it: give chat one
        from vlmopt.emit.clusters import build_clusters

        plan = mixed_plan()
        plan.services[0].slo["tpot_p95_ms"] = 40.0
        default = build_clusters(plan, DeploySettings.model_validate(BASE))[0].timeouts["chat"]
        changed = build_clusters(plan, DeploySettings.model_validate(_merge(BASE, value)))[0].timeouts["chat"]
        assert "100 tokens" in changed.derivation and changed.request_s < default.request_s
        return
    if setting == "mig_gpu_memory_utilization":
        # an explicit value in the plan wins; the setting applies where the plan leaves it unset
        plan = mixed_plan()
        for group in plan.node_groups:
            for r in group.gpu_layout.replicas:
                r.server_args.gpu_memory_utilization = None
        changed = emit_all(plan, DeploySettings.model_validate(_merge(BASE, value)))
        assert '"0.85"' in changed[path]
        return
    changed = _emit(value)
    assert needle in changed[path], f"{setting}: {needle!r} not in {path}"
    assert needle not in baseline.get(path, ""), f"{setting}: {needle!r} already in the default {path}"


def test_every_setting_has_a_case() -> None:
    """A new field needs a case above proving it reaches a file."""
    def leaves(model: type, prefix: str = "") -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields") and name != "ab":
                out |= leaves(ann, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    covered = {c[0].split(" ")[0] for c in CASES}
    # hf_token/api_key are SecretRef leaves: covered by the secrets.* cases
    assert leaves(DeploySettings) - covered <= {"secrets.hf_token.name", "secrets.hf_token.key",
                                                 "secrets.api_key.name", "secrets.api_key.key"}


def _workload(tmp_path: Path, deploy: dict | None) -> Path:
    data = yaml.safe_load(data_file("workloads/default.yaml").read_text())
    if deploy is not None:
        data["deploy"] = deploy
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _plan(tmp_path: Path, *args: str):
    out = tmp_path / "out"
    result = runner.invoke(app, ["plan", *args, "--out", str(out), "--report-dir", str(tmp_path / "rep")])
    return result, out


def test_workload_deploy_block_and_settings_file_reach_the_bundle(tmp_path: Path) -> None:
    result, out = _plan(tmp_path, "--workload", str(_workload(tmp_path, {"namespace": "from-workload"})))
    assert result.exit_code == 0, result.output
    assert "name: from-workload" in (out / "clusters/aws-us-east-1/kubernetes/00-namespace.yaml").read_text()
    settings = tmp_path / "deploy.yaml"
    settings.write_text(yaml.safe_dump({"namespace": "from-file", "gateway": "istio"}))
    result, out = _plan(tmp_path, "--workload", str(_workload(tmp_path, {"namespace": "from-workload"})),
                        "--deploy-settings", str(settings))
    assert result.exit_code == 0, result.output
    assert "name: from-file" in (out / "clusters/aws-us-east-1/kubernetes/00-namespace.yaml").read_text()
    assert (out / "clusters/aws-us-east-1/gateway/istio.yaml").is_file()


@pytest.mark.parametrize(
    ("source", "content", "needle"),
    [
        ("file", {"namespce": "x"}, "namespce: Extra inputs are not permitted"),
        ("file", {"storage": {"bucket": {"aws": "bucket-without-scheme"}}}, "not an s3://bucket/prefix"),
        ("workload", {"autoscaling": {"engine": "kubernetes"}}, "deploy.autoscaling.engine"),
        ("file", {"ab": {"service": "nope", "variant": "x", "model": "a/b", "weight_percent": 10}},
         "ab: service 'nope' is not in the plan"),
    ],
)
def test_bad_settings_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, source: str, content: dict, needle: str
) -> None:
    if source == "file":
        path = tmp_path / "deploy.yaml"
        path.write_text(yaml.safe_dump(content))
        result, out = _plan(tmp_path, "--deploy-settings", str(path))
    else:
        result, out = _plan(tmp_path, "--workload", str(_workload(tmp_path, content)))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert needle in text and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists() and not (tmp_path / "rep").exists()
