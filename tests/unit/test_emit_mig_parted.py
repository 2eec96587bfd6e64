"""mig-parted config: the v1 structure mig-parted accepts (docs/deploy-bundle.md#choices-and-why), one config per
distinct layout, node pools labelled with a config name, and every layout checked against the hardware model's
placement rules (invalid ones refused)."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.bundle_fixtures import emit
from tests.unit.plan_fixtures import h100_layout, mixed_plan, multi_cloud_plan, node_groups, whole_gpu_only_plan
from vlmopt.emit import EmitError, emit_mig_parted
from vlmopt.emit.mig_parted import layout_counts, mig_config_name
from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.mig import validate_layout
from vlmopt.schemas import GpuAssignment

# api/spec/v1/spec.go: the only keys of a MigConfigSpec; unknown fields are errors for mig-parted.
SPEC_KEYS = {"device-filter", "devices", "mig-enabled", "mig-devices"}


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(emit_mig_parted(mixed_plan())["mig-parted/config.yaml"])


def test_structure_is_mig_parted_v1(config: dict) -> None:
    assert config["version"] == "v1"
    assert set(config) == {"version", "mig-configs"}
    for name, specs in config["mig-configs"].items():
        assert isinstance(specs, list) and specs, name
        for spec in specs:
            assert set(spec) <= SPEC_KEYS, (name, set(spec) - SPEC_KEYS)
            assert spec["devices"] == "all" or all(isinstance(i, int) for i in spec["devices"])
            assert isinstance(spec["mig-enabled"], bool)
            if spec["mig-enabled"]:
                assert spec["mig-devices"], "MIG-enabled but empty GPUs are not advertised (k8s-device-plugin#767)"
                assert all(isinstance(n, int) and n > 0 for n in spec["mig-devices"].values())


def test_one_config_per_distinct_layout_and_device_filter_by_pci_id(config: dict) -> None:
    configs = config["mig-configs"]
    # H100 on-demand and spot share one layout -> one config; A100 has its own; all-disabled for whole GPUs.
    assert set(configs) == {
        "all-disabled",
        "vlmopt-h100-sxm-80gb-1x3g.40gb-1x2g.20gb-2x1g.10gb",
        "vlmopt-a100-80gb-sxm-2x3g.40gb",
    }
    h100 = configs["vlmopt-h100-sxm-80gb-1x3g.40gb-1x2g.20gb-2x1g.10gb"][0]
    assert h100["device-filter"] == ["0x233010DE"]  # NVML pciDeviceId form: 0x<device><vendor 10DE>
    assert h100["mig-devices"] == {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}


def test_every_emitted_layout_passes_the_placement_rules(config: dict) -> None:
    catalog = load_gpu_catalog()
    checked = 0
    for specs in config["mig-configs"].values():
        for spec in specs:
            if not spec["mig-enabled"]:
                continue
            gpu = next(
                g for g in catalog.gpus if g.nvml_pci_device_ids and spec["device-filter"][0] in g.nvml_pci_device_ids
            )
            profiles = [p for p, n in spec["mig-devices"].items() for _ in range(n)]
            validate_layout(gpu, profiles)  # raises InvalidLayoutError on a broken rule
            checked += 1
    assert checked == 2


def test_node_pools_label_their_nodes_with_an_existing_config(config: dict) -> None:
    """Each node pool definition puts `nvidia.com/mig.config=<name>` on its nodes; the name is a config."""
    files = emit(mixed_plan())
    pools = yaml.safe_load(files["clusters/aws-us-east-1/node-pools/eksctl-nodegroups.yaml"])["managedNodeGroups"]
    by_group = {p["labels"]["vlmopt.io/node-group"]: p["labels"]["nvidia.com/mig.config"] for p in pools}
    assert set(by_group) == {g.name for g in node_groups()}
    assert by_group["l4-whole-od"] == "all-disabled"
    assert by_group["h100-mig-od"] == by_group["h100-mig-spot"]
    assert set(by_group.values()) <= set(config["mig-configs"])


def test_each_cluster_configmap_carries_its_configs_for_the_gpu_operator(config: dict) -> None:
    files = emit(multi_cloud_plan())
    aws = yaml.safe_load(files["clusters/aws-us-east-1/mig-parted-configmap.yaml"])
    assert aws["kind"] == "ConfigMap" and aws["metadata"]["name"] == "vlmopt-mig-parted-config"
    assert yaml.safe_load(aws["data"]["config.yaml"]) == config
    gcp_cm = yaml.safe_load(files["clusters/gcp-us-east4/mig-parted-configmap.yaml"])
    gcp = yaml.safe_load(gcp_cm["data"]["config.yaml"])
    assert list(gcp["mig-configs"]) == ["all-disabled"]  # whole H100s only there
    values = yaml.safe_load(files["clusters/aws-us-east-1/gpu-operator-values.yaml"])
    assert values["mig"]["strategy"] == "mixed"
    assert values["migManager"]["config"] == {"name": "vlmopt-mig-parted-config", "default": "all-disabled"}


def test_creation_order_is_largest_first() -> None:
    assert list(layout_counts(["1g.10gb", "3g.40gb", "1g.10gb", "2g.20gb"])) == ["3g.40gb", "2g.20gb", "1g.10gb"]


def test_config_names_are_valid_label_values() -> None:
    name = mig_config_name("h100-sxm-80gb", ["1g.10gb+me", "1g.10gb", "3g.40gb"])
    assert "+" not in name and len(name) <= 63
    long_name = mig_config_name("a-very-long-gpu-identifier-from-a-custom-catalog", ["1g.10gb"] * 7)
    assert len(long_name) <= 63 and long_name[-1].isalnum()


def _with_h100_layout(layout: list[str], starts: list[int] | None) -> list:
    groups = node_groups()
    base = h100_layout()
    replicas = [r for r in base.replicas if r.slice in layout][: len(layout)]
    groups[0] = groups[0].model_copy(
        update={"gpu_layout": GpuAssignment(mig_layout=layout, mig_placements=starts, replicas=replicas)}
    )
    return groups


@pytest.mark.parametrize(
    ("layout", "starts", "rule"),
    [
        (["4g.40gb", "4g.40gb"], None, "at most 1"),  # max count
        (["3g.40gb", "3g.40gb", "2g.20gb"], None, "compute slices"),  # 8 of 7 compute slices
        (["3g.40gb", "2g.20gb"], [0, 2], "memory slot 2"),  # 3g@0 covers slots 0-3: overlaps 2g@2
        (["3g.40gb"], [2], "legal starts: 0, 4"),  # 3g may only start at 0 or 4
        (["5g.50gb"], None, "unknown MIG profile '5g.50gb'"),  # not a profile of this GPU
    ],
)
def test_invalid_layout_is_refused_naming_the_node_group(layout, starts, rule) -> None:
    plan = mixed_plan(_with_h100_layout(layout, starts))
    with pytest.raises(EmitError) as err:
        emit_mig_parted(plan)
    message = str(err.value)
    assert "node group h100-mig-od" in message and "invalid MIG layout" in message
    assert rule in message


def test_unknown_gpu_is_refused() -> None:
    groups = node_groups()
    groups[1] = groups[1].model_copy(update={"gpu": "h900-imaginary"})
    with pytest.raises(EmitError, match=r"h900-imaginary.*not in the GPU catalog"):
        emit_mig_parted(mixed_plan(groups))


def test_mig_layout_on_a_gpu_without_mig_is_refused() -> None:
    groups = node_groups()
    l4 = groups[3]
    groups[3] = l4.model_copy(
        update={
            "gpu_layout": GpuAssignment(
                mig_layout=["1g.10gb"],
                replicas=[r.model_copy(update={"slice": "1g.10gb"}) for r in l4.gpu_layout.replicas],
            )
        }
    )
    with pytest.raises(EmitError, match=r"l4-whole-od.*does not support MIG"):
        emit_mig_parted(mixed_plan(groups))


def test_whole_gpu_plan_only_has_all_disabled() -> None:
    config = yaml.safe_load(emit_mig_parted(whole_gpu_only_plan())["mig-parted/config.yaml"])
    assert config["mig-configs"] == {"all-disabled": [{"devices": "all", "mig-enabled": False}]}
