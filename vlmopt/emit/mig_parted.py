"""mig-parted `version: v1` config, one named config per distinct (GPU, MIG layout), and each node group's label.

Schema: mig-parted's api/spec/v1 (https://github.com/NVIDIA/mig-parted/tree/main/api/spec/v1): `mig-configs:
{name: [{device-filter, devices, mig-enabled, mig-devices}]}`. The GPU Operator's mig-manager applies the config
named by the node label `nvidia.com/mig.config`
(https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/gpu-operator-mig.html). Every layout is checked
against the hardware model's placement rules first; an invalid layout is refused, never written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from vlmopt.schemas import GpuCatalog, GpuSpec, NodeGroup, Plan
from vlmopt.schemas.deploy import DeploySettings

from ._common import DEFAULT_SETTINGS, GENERATED_BY, EmitError, dump_yaml, label_value

MIG_CONFIG_LABEL = "nvidia.com/mig.config"
# mig-parted's stock name for "MIG off"; the GPU Operator's default config (docs/deploy-bundle.md#choices-and-why).
ALL_DISABLED = "all-disabled"
MIG_DIR = "mig-parted"


def _profile_size(profile: str) -> tuple[int, int]:
    """Sort key: compute slices then memory GB from '3g.40gb' (larger first gives a creation order that works)."""
    head = profile.split("+")[0].split("-")[0]
    try:
        g, mem = head.split(".")
        return int(g.rstrip("g")), int(mem.rstrip("gb"))
    except ValueError:
        return 0, 0


def layout_counts(layout: Sequence[str]) -> dict[str, int]:
    """Profile -> count, largest profile first (mig-parted treats `mig-devices` as a multiset)."""
    counts = Counter(layout)
    return {p: counts[p] for p in sorted(counts, key=lambda p: (_profile_size(p), p), reverse=True)}


def mig_config_name(gpu: str, layout: Sequence[str] | None) -> str:
    """The mig-parted config name, which is also the node label value, so it must be a valid label value."""
    if not layout:
        return ALL_DISABLED
    body = "-".join(f"{n}x{p}" for p, n in layout_counts(layout).items())
    return label_value(f"vlmopt-{gpu}-{body}")


def load_catalog() -> GpuCatalog:
    from vlmopt.hw.catalog import load_gpu_catalog

    return load_gpu_catalog()


def validate_node_group_layout(group: NodeGroup, gpu: GpuSpec) -> None:
    """Raise EmitError unless the group's layout passes the hardware model's placement rules."""
    from vlmopt.hw.mig import InvalidLayoutError, validate_layout

    layout = group.gpu_layout
    if layout.mig_layout is None:
        return
    if gpu.mig is None:
        raise EmitError(
            f"node group {group.name}: GPU {gpu.id} does not support MIG but has layout {layout.mig_layout}"
        )
    if not layout.mig_layout:
        # MIG-enabled but empty GPUs are not advertised (NVIDIA/k8s-device-plugin#767).
        raise EmitError(f"node group {group.name}: empty MIG layout; use mig_layout: null for a whole GPU")
    try:
        validate_layout(gpu, list(layout.mig_layout), layout.mig_placements)
    except InvalidLayoutError as exc:
        raise EmitError(
            f"node group {group.name}: invalid MIG layout {list(layout.mig_layout)} on {gpu.id}: {exc}"
        ) from exc


def node_group_mig_config(group: NodeGroup) -> str:
    return mig_config_name(group.gpu, group.gpu_layout.mig_layout)


def _gpu_spec(catalog: GpuCatalog, group: NodeGroup) -> GpuSpec:
    try:
        return catalog.get(group.gpu)
    except KeyError as exc:
        raise EmitError(f"node group {group.name}: gpu {group.gpu!r} is not in the GPU catalog") from exc


def build_mig_parted_config(plan: Plan, catalog: GpuCatalog) -> tuple[dict, dict[str, str]]:
    """(mig-parted config dict, node group -> config name). Validates every layout."""
    configs: dict[str, list[dict]] = {ALL_DISABLED: [{"devices": "all", "mig-enabled": False}]}
    labels: dict[str, str] = {}
    for group in plan.node_groups:
        gpu = _gpu_spec(catalog, group)
        validate_node_group_layout(group, gpu)
        name = node_group_mig_config(group)
        labels[group.name] = name
        if name in configs:
            continue
        entry: dict[str, object] = {}
        if gpu.pci_device_ids:
            # Restricts the config to this GPU model on a mixed node (id format: docs/deploy-bundle.md#choices-and-why).
            entry["device-filter"] = gpu.nvml_pci_device_ids
        entry["devices"] = "all"
        entry["mig-enabled"] = True
        entry["mig-devices"] = layout_counts(group.gpu_layout.mig_layout or [])
        configs[name] = [entry]
    return {"version": "v1", "mig-configs": configs}, labels


def emit_mig_parted(
    plan: Plan, settings: DeploySettings = DEFAULT_SETTINGS, catalog: GpuCatalog | None = None
) -> dict[str, str]:
    catalog = catalog if catalog is not None else load_catalog()
    config, _ = build_mig_parted_config(plan, catalog)
    config_text = dump_yaml(
        config, header=[f"{GENERATED_BY} ({plan.name}): nvidia-mig-parted apply -f config.yaml -c <name>"]
    )
    # Kubernetes: each cluster's GPU operator reads its own subset as a ConfigMap (node_pools.py) and each node
    # pool labels its nodes with their config's name; this file is for `nvidia-mig-parted` on VMs.
    return {f"{MIG_DIR}/config.yaml": config_text}
