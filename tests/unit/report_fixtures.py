"""Small builders of Plans, benchmark profiles and variant manifests for the report tests.

The figures are synthetic but shaped like a real cloud plan: prices in the range of vlmopt/data/prices.yaml (H100
on-demand $6.88/GPU-h), MIG profiles and usable GiB from vlmopt/data/gpus.yaml (H100 3g.40gb = 39.50 GiB), fidelity
numbers of the order the tiny test models give. Every cost is derived from the same few inputs so the
totals, the node groups and the levers agree the way a real planner's output does.
"""

from __future__ import annotations

from vlmopt.schemas import (
    Baseline,
    BenchmarkProfile,
    Candidate,
    CapacitySummary,
    CostSummary,
    DeviceInfo,
    EngineInfo,
    Fidelity,
    GpuAssignment,
    Lever,
    LoadPoint,
    NodeGroup,
    Plan,
    Provenance,
    Replica,
    ServerArgs,
    ServicePlan,
    Variant,
    VariantManifest,
    WorkloadSpec,
)

HOURS_PER_MONTH = 730
OUTPUT_TOKENS = 256
ON_DEMAND_GPU_HOUR = 6.88
SPOT_GPU_HOUR = 2.30
REPLICA_RPS = 2.5
SLO_TTFT_P95_MS = 1000.0
PRICE_SOURCE = "vlmopt/data/prices.yaml: https://aws.amazon.com/ec2/pricing/on-demand/"
PRICE_DATE = "2026-11-01"
PROFILE_PATH = "profiles/qwen2.5-vl-7b/awq@h100-sxm-80gb-mig-3g_40gb.json"
SECRET = "hf_SECRETtokenVALUE123"


def _price(market: str) -> Provenance:
    return Provenance(kind="catalog", source=f"{PRICE_SOURCE} ({market})", date=PRICE_DATE)


def _measured() -> Provenance:
    return Provenance(kind="measured", source=PROFILE_PATH, date="2026-11-20")


def _estimated() -> Provenance:
    return Provenance(kind="estimated", source="roofline v1 (calibrated on 2 profiles)", date=None)


def _replica(variant: str, start: int, with_memory: bool) -> Replica:
    return Replica(
        service="doc-qa", variant=variant, slice="3g.40gb", mig_start=start,
        # The secret sits where a careless emitter might copy it; the report must never print server env.
        server_args=ServerArgs(model=f"variants/qwen/{variant}", max_model_len=8192, max_num_seqs=64,
                               gpu_memory_utilization=0.9, env={"HF_TOKEN": SECRET}),
        capacity_rps=REPLICA_RPS, capacity_provenance=_measured(), kv_token_capacity=180_000,
        memory_gib={"weights": 5.6, "kv_cache": 28.0, "reserve": 2.5, "total": 36.1, "usable": 39.5}
        if with_memory else None,
    )


def _group(name: str, market: str, instances: int, with_memory: bool) -> NodeGroup:
    price = ON_DEMAND_GPU_HOUR if market == "on_demand" else SPOT_GPU_HOUR
    return NodeGroup(
        name=name, gpu="h100-sxm-80gb", cloud="aws", region="us-east-1", instance_type="p5.4xlarge",
        market=market, gpus_per_instance=1, instances=instances,
        gpu_layout=GpuAssignment(mig_layout=["3g.40gb", "3g.40gb"], mig_placements=[0, 4],
                                 replicas=[_replica("awq", 0, with_memory), _replica("awq", 4, with_memory)]),
        usd_per_hour=round(price * instances, 6), price_provenance=_price(market),
    )


def _cost(usd_per_hour: float, rps: float) -> CostSummary:
    tokens_per_hour = rps * OUTPUT_TOKENS * 3600
    images_per_hour = rps * 3600
    return CostSummary(
        usd_per_hour=usd_per_hour, usd_per_month=usd_per_hour * HOURS_PER_MONTH,
        usd_per_million_output_tokens=usd_per_hour / tokens_per_hour * 1e6,
        usd_per_thousand_images=usd_per_hour / images_per_hour * 1e3,
    )


CANDIDATE_VARIANTS = {"bf16": (16.0, 1.0), "fp8": (8.5, 1.6), "awq": (5.6, 2.5)}  # weights GiB, speed factor
CANDIDATE_SLICES = {"whole": (79.25, 1.0), "3g.40gb": (39.5, 0.45), "1g.10gb": (9.75, 0.12)}  # usable GiB, share


def make_candidates() -> list[Candidate]:
    """variant x slice x market; small slices cannot hold bf16, 1g slices miss the latency SLO."""
    out = []
    for variant, (weights, speed) in CANDIDATE_VARIANTS.items():
        for slice_name, (usable, share) in CANDIDATE_SLICES.items():
            for market in ("on_demand", "spot"):
                fits = weights + 4.0 < usable
                replicas_per_gpu = 1 if slice_name == "whole" else (2 if slice_name == "3g.40gb" else 7)
                gpu_hour = ON_DEMAND_GPU_HOUR if market == "on_demand" else SPOT_GPU_HOUR
                per_replica = gpu_hour / replicas_per_gpu
                capacity = 6.0 * speed * share if fits else 0.0
                p95 = 900.0 / (speed * share ** 0.5) if fits else None
                meets = fits and p95 is not None and p95 <= SLO_TTFT_P95_MS
                per_token = per_replica / (capacity * OUTPUT_TOKENS * 3600) * 1e6 if capacity else None
                out.append(Candidate(
                    service="doc-qa", variant=variant, gpu="h100-sxm-80gb", slice=slice_name, market=market,
                    fits=fits, meets_slo=meets, capacity_rps=capacity, usd_per_hour_per_replica=per_replica,
                    p95_latency_ms=p95, usd_per_million_output_tokens=per_token,
                    reason="" if meets else ("does not fit" if not fits else f"p95 TTFT above {SLO_TTFT_P95_MS:g} ms"),
                    provenance=_measured() if (variant, slice_name) == ("awq", "3g.40gb") else _estimated(),
                ))
    return out


def make_plan(
    *, baseline: bool = True, levers: bool = True, candidates: bool = True, memory: bool = True,
    lever_gap: float = 0.0,
) -> Plan:
    """A cloud plan: awq on 2x 3g.40gb per H100, one on-demand and two spot GPUs.

    `lever_gap` removes that many $/h from the spot lever, so the levers no longer add up (the report must
    show the gap as 'unattributed').
    """
    groups = [_group("h100-od", "on_demand", 1, memory), _group("h100-spot", "spot", 2, memory)]
    total = sum(g.usd_per_hour for g in groups)
    replicas = sum(g.instances * len(g.gpu_layout.replicas) for g in groups)
    provided = replicas * REPLICA_RPS
    base_cost = _cost(4 * ON_DEMAND_GPU_HOUR, 4 * 4.0)
    lever_list = [
        Lever(name="quantization", usd_per_hour_saved=ON_DEMAND_GPU_HOUR,
              explanation="awq needs 3 whole GPUs where bf16 needs 4"),
        Lever(name="mig_packing", usd_per_hour_saved=ON_DEMAND_GPU_HOUR,
              explanation="two awq replicas share each H100 as 2x 3g.40gb"),
        Lever(name="spot", usd_per_hour_saved=base_cost.usd_per_hour - 2 * ON_DEMAND_GPU_HOUR - total - lever_gap,
              explanation="2 of 3 GPUs on spot with an on-demand floor of 1"),
    ]
    return Plan(
        name="doc-qa", mode="cloud", created="2026-11-26T10:00:00+00:00", workload="bundled:doc-qa",
        services=[ServicePlan(service="doc-qa", model="qwen2.5-vl-7b", variant="awq",
                              why="cheapest variant within the KL floor 0.01", required_rps=12.0,
                              provided_rps=provided, replicas=replicas, availability=0.9991,
                              fidelity={"mean_kl": 4.1e-4, "top1_agreement": 0.8},
                              slo={"ttft_p95_ms": SLO_TTFT_P95_MS})],
        node_groups=groups,
        cost=_cost(total, provided).model_copy(update={"expected_usd_per_hour": total * 1.04,
                                                       "worst_case_usd_per_hour": total + 2 * ON_DEMAND_GPU_HOUR}),
        baseline=Baseline(cost=base_cost) if baseline else None,
        levers=lever_list if levers else [],
        binding_constraints=[f"doc-qa: ttft_p95_ms <= {SLO_TTFT_P95_MS:g}", "availability >= 0.999"],
        candidates=make_candidates() if candidates else [],
        inputs=[
            Provenance(kind="catalog", source="vlmopt/data/gpus.yaml (NVIDIA MIG user guide tables)",
                       date="2026-11-01"),
            _price("on_demand"), _price("spot"), _measured(), _estimated(),
        ],
        solver={"name": "scipy.optimize.milp (HiGHS)", "status": "optimal", "seconds": 0.4},
        notes=["spot interruption rate 5%/h assumed where the catalog has none"],
    )


def _point(concurrency: int, speed: float) -> LoadPoint:
    throughput = speed * concurrency / (1 + 0.08 * concurrency)
    ttft = 120.0 * (1 + 0.15 * concurrency) / speed
    e2el = ttft + OUTPUT_TOKENS * 12.0 * (1 + 0.05 * concurrency) / speed
    return LoadPoint(
        label=f"c{concurrency}", max_concurrency=concurrency, num_prompts=64, completed=64, duration=64 / throughput,
        request_throughput=throughput, output_throughput=throughput * OUTPUT_TOKENS, images_per_s=throughput,
        median_ttft_ms=ttft, p95_ttft_ms=ttft * 1.6, median_e2el_ms=e2el, p95_e2el_ms=e2el * 1.3,
        median_tpot_ms=12.0 / speed, p95_tpot_ms=15.0 / speed, meets_slo=ttft * 1.6 <= SLO_TTFT_P95_MS,
    )


def make_profile(variant: str = "awq", speed: float = 1.0, run_id: str = "run-awq-1") -> BenchmarkProfile:
    return BenchmarkProfile(
        model="qwen2.5-vl-7b", variant=variant, variant_method=variant if variant != "bf16" else "none",
        device=DeviceInfo(kind="gpu", name="NVIDIA H100 80GB HBM3", mig_profile="3g.40gb", memory_gib=39.5,
                          catalog_id="h100-sxm-80gb"),
        engine=EngineInfo(version="0.32.0", server_args=ServerArgs(model=f"variants/qwen/{variant}")),
        workload=WorkloadSpec(input_tokens=512, output_tokens=OUTPUT_TOKENS, image_sizes=[(448, 448)]),
        points=[_point(c, speed) for c in (1, 2, 4, 8, 16)],
        capacity=CapacitySummary(slo={"ttft_p95_ms": SLO_TTFT_P95_MS}, max_rate_meeting_slo=3.1 * speed,
                                 saturation_rate=8.0 * speed, method="highest passing point"),
        run_id=run_id, started="2026-11-20T09:00:00+00:00", finished="2026-11-20T09:20:00+00:00", complete=True,
    )


def make_profiles() -> list[BenchmarkProfile]:
    return [make_profile("awq", 1.0, "run-awq-1"), make_profile("bf16", 0.8, "run-bf16-1")]


def make_manifest() -> VariantManifest:
    def variant(name: str, method: str, scheme: str, fidelity: Fidelity | None, size_gb: float) -> Variant:
        return Variant(name=name, method=method, scheme=scheme, path=name, bytes_on_disk=int(size_gb * 1e9),
                       fidelity=fidelity, verified=True)

    def fid(kl: float, top1: float) -> Fidelity:
        return Fidelity(mean_kl=kl, top1_agreement=top1, prompts=40, measured_how="in-process before save")

    return VariantManifest(
        base_model="Qwen/Qwen2.5-VL-7B-Instruct", architecture="Qwen2_5_VLForConditionalGeneration",
        created="2026-11-19T08:00:00+00:00",
        variants=[
            variant("bf16", "none", "BF16", None, 16.6),
            variant("fp8", "fp8", "FP8_DYNAMIC", fid(6e-5, 0.925), 9.4),
            variant("gptq", "gptq", "W4A16", fid(9e-5, 0.85), 6.1),
            variant("awq", "awq", "W4A16_ASYM", fid(4.1e-4, 0.80), 6.2),
        ],
    )
