"""write_bundle: every file written and listed, atomic (nothing on error, an existing bundle never half-replaced),
and no secret value anywhere in the bundle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.unit.plan_fixtures import h100_layout, mixed_plan, node_groups, whole_gpu_only_plan
from vlmopt.emit import EmitError, write_bundle
from vlmopt.emit import bundle as bundle_module
from vlmopt.schemas import GpuAssignment, Plan, load_model

SECRET = "sk-test-SECRET-4f1c9a"
API_SECRET = "sk-test-APIKEY-77e2b0"
OTHER_SECRET = "sk-test-OPENAI-0d93aa"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bundle_has_every_target_and_a_readme_listing_each_file(tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "qwen"
    written = write_bundle(mixed_plan(), out)
    rel = {str(p.relative_to(out)) for p in written}
    assert all(p.is_file() for p in written)
    assert set(tree(out)) == rel | {bundle_module.MARKER_FILE}
    for prefix in (
        "plan.json",
        "README.md",
        "vllm/",
        "clusters/aws-us-east-1/kubernetes/",
        "clusters/aws-us-east-1/node-pools/",
        "clusters/aws-us-east-1/monitoring/",
        "clusters/aws-us-east-1/gateway/",
        "clusters/aws-us-east-1/autoscaling/",
        "weights/",
        "mig-parted/",
        "skypilot/",
        "nginx/",
        "prometheus/",
        "grafana/",
        "triton/model_repository/",
    ):
        assert any(r.startswith(prefix) for r in rel), prefix
    readme = (out / "README.md").read_text()
    for r in rel - {"README.md"}:
        assert f"`{r}`" in readme, r
    assert "estimated (" in readme and "measured (" in readme and "catalog (" in readme  # provenance on figures
    assert load_model(Plan, out / "plan.json") == mixed_plan()
    for r in rel:
        text = (out / r).read_text()
        if r.endswith((".yaml", ".yml")):
            assert list(yaml.safe_load_all(text)), r
        elif r.endswith(".json"):
            json.loads(text)
    assert all(os.access(out / r, os.X_OK) for r in rel if r.endswith(".sh"))


def _invalid_layout_plan() -> Plan:
    groups = node_groups()
    bad = GpuAssignment(mig_layout=["4g.40gb", "4g.40gb"], replicas=[])
    groups[1] = groups[1].model_copy(update={"gpu_layout": bad})
    return mixed_plan(groups)


def test_nothing_is_written_on_error(tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "bad"
    with pytest.raises(EmitError, match="h100-mig-spot"):
        write_bundle(_invalid_layout_plan(), out)
    assert not out.exists()
    assert not (tmp_path / "deploy").exists() or not any((tmp_path / "deploy").iterdir())


def test_existing_bundle_survives_a_failed_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "bundle"
    write_bundle(mixed_plan(), out)
    before = tree(out)
    with pytest.raises(EmitError):
        write_bundle(_invalid_layout_plan(), out)
    assert tree(out) == before

    def fail_midway(*args, **kwargs):
        raise OSError("disk full")

    # Fails after staging has started filling: the staging folder goes, the old bundle stays.
    monkeypatch.setattr(bundle_module, "save_model", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(whole_gpu_only_plan(), out)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging or backup folders left


def test_rewrite_replaces_the_whole_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    write_bundle(mixed_plan(), out)
    write_bundle(whole_gpu_only_plan(), out)
    files = tree(out)
    assert not any("h100" in name for name in files), "files of the previous plan must not linger"
    assert json.loads(files["plan.json"])["name"] == "whole-only"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(EmitError, match="not a vlmopt bundle"):
        write_bundle(mixed_plan(), out)
    assert tree(out) == {"notes.txt": b"mine"}


def _plan_with_planted_secrets() -> Plan:
    groups = node_groups()
    layout = h100_layout()
    replicas = []
    for r in layout.replicas:
        args = r.server_args.model_copy(
            update={
                "env": {"HF_TOKEN": SECRET, "OPENAI_API_KEY": OTHER_SECRET, "VLLM_LOGGING_LEVEL": "INFO"},
                "extra_args": [*r.server_args.extra_args, "--api-key", API_SECRET, f"--hf-token={SECRET}"],
            }
        )
        replicas.append(r.model_copy(update={"server_args": args}))
    planted = layout.model_copy(update={"replicas": replicas})
    groups[0] = groups[0].model_copy(update={"gpu_layout": planted})
    groups[1] = groups[1].model_copy(update={"gpu_layout": planted})
    return mixed_plan(groups)


def test_no_secret_value_lands_in_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("VLLM_API_KEY", API_SECRET)
    out = tmp_path / "bundle"
    write_bundle(_plan_with_planted_secrets(), out)
    files = tree(out)
    for name, data in files.items():
        for secret in (SECRET, API_SECRET, OTHER_SECRET):
            assert secret.encode() not in data, f"{secret} leaked into {name}"
    # Secrets are referenced by name instead, and ordinary settings survive.
    assert b"secretKeyRef" in files["clusters/aws-us-east-1/kubernetes/service-chat.yaml"]
    launcher = files["vllm/chat--awq--h100-sxm-80gb--3g.40gb.sh"].decode()
    assert "VLLM_LOGGING_LEVEL=INFO" in launcher and "--api-key" not in launcher


def test_a_secret_value_in_an_unexpected_place_stops_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last line of defence: a secret's value anywhere (here as a model name) refuses the write, naming the
    variable but never printing the value."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    groups = node_groups()
    l4 = groups[3]
    leaked = [
        r.model_copy(update={"server_args": r.server_args.model_copy(update={"model": f"org/{SECRET}"})})
        for r in l4.gpu_layout.replicas
    ]
    groups[3] = l4.model_copy(update={"gpu_layout": l4.gpu_layout.model_copy(update={"replicas": leaked})})
    out = tmp_path / "bundle"
    with pytest.raises(EmitError, match="HF_TOKEN") as err:
        write_bundle(mixed_plan(groups), out)
    assert SECRET not in str(err.value)
    assert not out.exists()
