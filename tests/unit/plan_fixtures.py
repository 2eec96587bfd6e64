"""Plans built in code for the emitter tests: what `vlmopt plan` produces, without running the optimizer.

`mixed_plan()` has two services sharing MIG-partitioned H100s (on-demand and spot node groups), an 8-GPU A100
instance on spot with a different layout, and whole L4 GPUs on demand. Prices are rows of the bundled
vlmopt/data/prices.yaml (AWS us-east-1, skypilot-catalog v8); capacities are labelled estimated or measured as a
planner would.
"""

from __future__ import annotations

from vlmopt.schemas import (
    Baseline,
    CostSummary,
    GpuAssignment,
    Lever,
    NodeGroup,
    Plan,
    Provenance,
    Replica,
    ServerArgs,
    ServicePlan,
)

CATALOG_PRICE = Provenance(
    kind="catalog", source="vlmopt/data/prices.yaml: skypilot-catalog catalogs/v8/aws/vms.csv@00148f2a",
    date="2026-09-01",
)
ROOFLINE = Provenance(kind="estimated", source="vlmopt roofline v1 (efficiency fitted to 2 profiles)")
MEASURED = Provenance(
    kind="measured", source="profiles/qwen2.5-vl-3b/fp8@l4-24gb.json run 20260901-1200", date="2026-09-01"
)

CHAT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct-AWQ"  # a hub id: vLLM downloads it
DOCS_MODEL = "variants/qwen2.5-vl-3b/fp8"  # a local folder written by `vlmopt quantize`


def chat_args(max_num_seqs: int, batched: int, **extra: object) -> ServerArgs:
    return ServerArgs(
        model=CHAT_MODEL,
        max_model_len=8192,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=batched,
        gpu_memory_utilization=0.9,
        quantization="awq_marlin",
        limit_mm_per_prompt={"image": 1, "video": 0},
        **extra,
    )


def docs_args(max_num_seqs: int, batched: int, gpu_memory_utilization: float | None = 0.9) -> ServerArgs:
    return ServerArgs(
        model=DOCS_MODEL,
        max_model_len=16384,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=batched,
        gpu_memory_utilization=gpu_memory_utilization,
        # llm-compressor checkpoints declare this in config.json; the emitter drops the redundant flag.
        quantization="compressed-tensors",
        limit_mm_per_prompt={"image": 4, "video": 0},
        extra_args=["--enable-prefix-caching"],
    )


def h100_mig_replicas() -> list[Replica]:
    """3g.40gb + 2g.20gb + 2x 1g.10gb on one H100 (legal: starts 4, 0, 2, 3)."""
    return [
        Replica(
            service="chat",
            variant="awq",
            slice="3g.40gb",
            mig_start=4,
            server_args=chat_args(64, 8192),
            capacity_rps=3.2,
            capacity_provenance=ROOFLINE,
            kv_token_capacity=250_000,
            memory_gib={"weights": 6.5, "kv_cache": 27.0, "reserve": 2.0, "total": 35.5, "usable": 39.5},
        ),
        Replica(
            service="chat",
            variant="awq",
            slice="2g.20gb",
            mig_start=0,
            server_args=chat_args(32, 4096),
            capacity_rps=1.6,
            capacity_provenance=ROOFLINE,
            memory_gib={"weights": 6.5, "kv_cache": 9.0, "reserve": 2.0, "total": 17.5, "usable": 19.62},
        ),
        Replica(
            service="docs",
            variant="fp8",
            slice="1g.10gb",
            mig_start=2,
            server_args=docs_args(16, 4096),
            capacity_rps=0.5,
            capacity_provenance=ROOFLINE,
            memory_gib={"weights": 4.4, "kv_cache": 3.0, "reserve": 1.0, "total": 8.4, "usable": 9.75},
        ),
        Replica(
            service="docs",
            variant="fp8",
            slice="1g.10gb",
            mig_start=3,
            server_args=docs_args(16, 4096),
            capacity_rps=0.5,
            capacity_provenance=ROOFLINE,
            memory_gib={"weights": 4.4, "kv_cache": 3.0, "reserve": 1.0, "total": 8.4, "usable": 9.75},
        ),
    ]


def h100_layout() -> GpuAssignment:
    return GpuAssignment(
        mig_layout=["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"],
        mig_placements=[4, 0, 2, 3],
        replicas=h100_mig_replicas(),
    )


def a100_layout() -> GpuAssignment:
    return GpuAssignment(
        mig_layout=["3g.40gb", "3g.40gb"],
        mig_placements=[0, 4],
        replicas=[
            Replica(
                service="chat",
                variant="awq",
                slice="3g.40gb",
                mig_start=start,
                server_args=chat_args(48, 8192),
                capacity_rps=2.1,
                capacity_provenance=ROOFLINE,
            )
            for start in (0, 4)
        ],
    )


def l4_whole() -> GpuAssignment:
    return GpuAssignment(
        mig_layout=None,
        replicas=[
            Replica(
                service="docs",
                variant="fp8",
                slice="whole",
                server_args=docs_args(64, 8192),
                capacity_rps=1.4,
                capacity_provenance=MEASURED,
            )
        ],
    )


def node_groups() -> list[NodeGroup]:
    return [
        NodeGroup(
            name="h100-mig-od",
            gpu="h100-sxm-80gb",
            cloud="aws",
            region="us-east-1",
            instance_type="p5.4xlarge",
            market="on_demand",
            gpus_per_instance=1,
            instances=2,
            gpu_layout=h100_layout(),
            usd_per_hour=2 * 6.88,
            price_provenance=CATALOG_PRICE,
        ),
        NodeGroup(
            name="h100-mig-spot",
            gpu="h100-sxm-80gb",
            cloud="aws",
            region="us-east-1",
            instance_type="p5.4xlarge",
            market="spot",
            gpus_per_instance=1,
            instances=3,
            gpu_layout=h100_layout(),
            usd_per_hour=3 * 2.60,
            price_provenance=CATALOG_PRICE,
        ),
        NodeGroup(
            name="a100-mig-spot",
            gpu="a100-80gb-sxm",
            cloud="aws",
            region="us-east-1",
            instance_type="p4de.24xlarge",
            market="spot",
            gpus_per_instance=8,
            instances=1,
            gpu_layout=a100_layout(),
            usd_per_hour=9.31,
            price_provenance=CATALOG_PRICE,
        ),
        NodeGroup(
            name="l4-whole-od",
            gpu="l4-24gb",
            cloud="aws",
            region="us-east-1",
            instance_type="g6.xlarge",
            market="on_demand",
            gpus_per_instance=1,
            instances=2,
            gpu_layout=l4_whole(),
            usd_per_hour=2 * 0.8048,
            price_provenance=CATALOG_PRICE,
        ),
    ]


def mixed_plan(groups: list[NodeGroup] | None = None, name: str = "qwen-vl-mixed") -> Plan:
    groups = node_groups() if groups is None else groups
    usd = sum(g.usd_per_hour for g in groups)
    return Plan(
        name=name,
        mode="cloud",
        created="2026-09-02T10:00:00+00:00",
        workload="bundled:multi-service",
        services=[
            ServicePlan(
                service="chat",
                model="qwen2.5-vl-7b",
                variant="awq",
                why="cheapest variant within the KL floor",
                required_rps=24.0,
                provided_rps=5 * 4.8 + 8 * 2.1,
                replicas=26,
                slo={"ttft_p50_ms": 200.0, "ttft_p95_ms": 500.0},
            ),
            ServicePlan(
                service="docs",
                model="qwen2.5-vl-3b",
                variant="fp8",
                why="fp8 keeps top-1 agreement >= 0.98",
                required_rps=6.0,
                provided_rps=5 * 1.0 + 2 * 1.4,
                replicas=12,
                slo={"ttft_p95_ms": 1500.0, "e2el_p95_ms": 8000.0},
            ),
        ],
        node_groups=groups,
        cost=CostSummary(usd_per_hour=usd, usd_per_month=usd * 730, expected_usd_per_hour=usd * 1.04),
        baseline=Baseline(cost=CostSummary(usd_per_hour=96.3, usd_per_month=96.3 * 730)),
        levers=[Lever(name="mig_packing", usd_per_hour_saved=40.0, explanation="4 replicas per H100")],
        availability_target=0.999,
    )


def whole_gpu_only_plan() -> Plan:
    """Only whole GPUs, on demand: no MIG anywhere (mig-parted gets just all-disabled)."""
    return mixed_plan([g for g in node_groups() if g.gpu_layout.mig_layout is None], name="whole-only")


def require_tool(name: str) -> str:
    """Path of a validator binary; fails (never skips) with the fix when it is missing."""
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        pytest.fail(f"validator `{name}` is not installed: run `scripts/setup.sh --ci-tools` (CI installs it)")
    return path


GCP_PRICE = Provenance(
    kind="catalog",
    source="vlmopt/data/prices.yaml: skypilot-catalog catalogs/v8/gcp/vms.csv@006059e0",
    date="2026-09-01",
)


def gcp_h100_spot() -> NodeGroup:
    """Whole H100s on GKE spot (a3-highgpu-1g, us-east4) serving chat beside the AWS groups."""
    return NodeGroup(
        name="h100-gcp-spot",
        gpu="h100-sxm-80gb",
        cloud="gcp",
        region="us-east4",
        instance_type="a3-highgpu-1g",
        market="spot",
        gpus_per_instance=1,
        instances=2,
        gpu_layout=GpuAssignment(
            mig_layout=None,
            replicas=[
                Replica(
                    service="chat",
                    variant="awq",
                    slice="whole",
                    server_args=chat_args(128, 16384),
                    capacity_rps=6.0,
                    capacity_provenance=ROOFLINE,
                    memory_gib={"weights": 6.5, "kv_cache": 60.0, "reserve": 4.0, "total": 70.5, "usable": 79.0},
                )
            ],
        ),
        usd_per_hour=2 * 2.59677,
        price_provenance=GCP_PRICE,
    )


def multi_cloud_plan() -> Plan:
    """The mixed plan plus a GKE spot group: two clusters (aws us-east-1, gcp us-east4)."""
    return mixed_plan([*node_groups(), gcp_h100_spot()], name="multi-cloud")


def single_replica_plan() -> Plan:
    """One on-demand L4 serving docs: the plan says availability 1.0, but one replica has no redundancy."""
    l4 = node_groups()[3].model_copy(update={"instances": 1, "usd_per_hour": 0.8048})
    plan = mixed_plan([l4], name="single")
    services = [s.model_copy(update={"replicas": 1, "availability": 1.0}) for s in plan.services if s.service == "docs"]
    return plan.model_copy(update={"services": services})
