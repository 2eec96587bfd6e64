"""The bundle's custom resources against their CRD schemas: Gateway API HTTPRoute, KEDA ScaledObject, Prometheus
Operator PodMonitor/PrometheusRule, Istio VirtualService/DestinationRule.

The schemas come from the @kubernetes-models npm packages (tests/validators/package.json, pinned; generated from
the projects' published CRDs), installed by `scripts/setup.sh --ci-tools`. Their compiled validators check types,
required fields, enums, patterns and formats; unknown fields, which they let through, are caught by TypeScript's
excess-property check against the same packages' interfaces (tests/validators/validate.mjs)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.bundle_fixtures import documents, emit
from tests.unit.plan_fixtures import multi_cloud_plan

VALIDATORS = Path(__file__).resolve().parents[1] / "validators"
CRD_GROUPS = ("gateway.networking.k8s.io", "keda.sh", "monitoring.coreos.com", "networking.istio.io")
AB = {"service": "chat", "variant": "fp8", "model": "Org/chat-fp8", "weight_percent": 10}


def validate(docs: list[dict], tmp_path: Path) -> list[str]:
    node = shutil.which("node")
    if node is None or not (VALIDATORS / "node_modules" / "@kubernetes-models").is_dir():
        pytest.fail("CRD validators missing: run `scripts/setup.sh --ci-tools` (node + npm ci in tests/validators)")
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(docs))
    result = subprocess.run([node, str(VALIDATORS / "validate.mjs"), str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["errors"]


def custom_resources(files: dict[str, str]) -> list[dict]:
    return [d for _, d in documents(files) if d["apiVersion"].split("/")[0] in CRD_GROUPS]


@pytest.fixture(scope="module")
def resources() -> list[dict]:
    docs = custom_resources(emit(multi_cloud_plan(), ab=AB))
    docs += custom_resources(emit(multi_cloud_plan(), gateway="istio", ab=AB, hostnames=["vlm.example.com"]))
    return docs


def test_every_custom_resource_matches_its_crd(resources: list[dict], tmp_path: Path) -> None:
    kinds = {d["kind"] for d in resources}
    assert kinds == {"HTTPRoute", "ScaledObject", "PodMonitor", "PrometheusRule", "VirtualService", "DestinationRule"}
    assert validate(resources, tmp_path) == []


def test_the_crd_check_rejects_unknown_fields_and_wrong_types(resources: list[dict], tmp_path: Path) -> None:
    route = next(d for d in resources if d["kind"] == "HTTPRoute")
    typo = json.loads(json.dumps(route))
    typo["spec"]["rules"][0]["retries"] = typo["spec"]["rules"][0].pop("retry")  # Istio's spelling, not Gateway API's
    scaled = json.loads(json.dumps(next(d for d in resources if d["kind"] == "ScaledObject")))
    scaled["spec"]["maxReplicaCount"] = "ten"
    found = validate([typo, scaled], tmp_path)
    assert any("retries" in e for e in found), found
    assert any("maxReplicaCount" in e for e in found), found


def test_ab_split_weights_and_failure_policy(resources: list[dict]) -> None:
    route = next(d for d in resources if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "chat")
    rule = route["spec"]["rules"][0]
    weights = {b["name"]: b["weight"] for b in rule["backendRefs"]}
    assert weights == {"chat-a": 9000, "chat-b": 1000}
    assert rule["retry"] == {"codes": [503], "attempts": 2, "backoff": "100ms"}
    assert rule["timeouts"]["request"] == "600s"  # chat's SLO has no e2el/TPOT key: the default
    vs = next(d for d in resources if d["kind"] == "VirtualService" and d["metadata"]["name"] == "chat")
    route = vs["spec"]["http"][0]
    assert [r["weight"] for r in route["route"]] == [90, 10]
    assert route["retries"]["retryOn"] == "connect-failure,refused-stream,503"
    rules = [d for d in resources if d["kind"] == "DestinationRule"]
    assert {r["metadata"]["name"] for r in rules} >= {"chat-a", "chat-b", "docs"}
    for r in rules:
        outlier = r["spec"]["trafficPolicy"]["outlierDetection"]
        assert outlier["consecutive5xxErrors"] == 3 and outlier["maxEjectionPercent"] == 50
