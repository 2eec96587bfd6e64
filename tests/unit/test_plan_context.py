"""The planning context: services resolved, offers and MIG layouts, every replica option evaluated, provenance."""

from __future__ import annotations

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.hw.models import load_model_arch
from vlmopt.paths import data_file
from vlmopt.plan.context import build_context, gpu_layouts
from vlmopt.plan.errors import PlanInfeasible, PlanInputError
from vlmopt.plan.inputs import PlanInputs, PlanningOptions
from vlmopt.plan.milp_model import WHOLE
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def catalogs():
    return load_gpu_catalog(), load_model(PriceCatalog, data_file("prices.yaml"))


def _inputs(catalogs, **constraints) -> PlanInputs:
    wl = Workload(name="ctx", constraints={"gpus": ["h100-sxm-80gb", "l4-24gb"], **constraints}, services=[
        {"name": "a", "model": "qwen2.5-vl-3b", "peak_rps": 2, "input_tokens": 64, "output_tokens": 32,
         "response_cache_hit_rate": 0.25, "slo": {"ttft_p95_ms": 2000}},
        {"name": "b", "model": "qwen2.5-vl-7b", "variants": ["bf16", "fp8"], "peak_rps": 1, "input_tokens": 64,
         "output_tokens": 32, "slo": {"ttft_p95_ms": 2000}},
    ])
    return PlanInputs(workload=wl, gpu_catalog=catalogs[0], price_catalog=catalogs[1])


def test_services_offers_layouts_and_options(catalogs) -> None:
    ctx = build_context(_inputs(catalogs), PlanningOptions(attribute_levers=False), load_model_arch)
    assert [sc.service.name for sc in ctx.services] == ["a", "b"] and ctx.services[1].where == "services[1]"
    assert ctx.services[0].demand_rps == pytest.approx(1.5)  # peak after the response cache
    assert [v.name for v in ctx.services[1].variants] == ["bf16", "fp8"]
    assert {o.offer.gpu for o in ctx.offers} == {"h100-sxm-80gb", "l4-24gb"}
    assert {o.offer.market for o in ctx.offers} == {"on_demand", "spot"}
    assert any(lay.is_mig for lay in ctx.layouts if lay.gpu == "h100-sxm-80gb")
    assert not any(lay.is_mig for lay in ctx.layouts if lay.gpu == "l4-24gb")  # the L4 has no MIG
    slices = {(e.service, e.variant, e.gpu, e.slice) for e in ctx.evals}
    assert ("b", "fp8", "h100-sxm-80gb", WHOLE) in slices and ("a", "bf16", "l4-24gb", WHOLE) in slices
    assert ctx.eval_of[("b", "fp8", "h100-sxm-80gb", WHOLE)].variant == "fp8"
    assert ctx.options.attribute_levers is False and ctx.availability_target == 0.999
    kinds = [p.kind for p in ctx.provenance]
    assert kinds[:3] == ["user", "catalog", "catalog"] and "estimated" in kinds


def test_mig_layouts_only_when_allowed(catalogs) -> None:
    gpus = {g.id: g for g in catalogs[0].gpus}
    with_mig = gpu_layouts(gpus["h100-sxm-80gb"], allow_mig=True)
    assert with_mig[0].slices == (WHOLE,) and len(with_mig) > 1
    assert all(lay.slices != ("7g.80gb",) for lay in with_mig)  # the full-GPU instance is the whole GPU
    assert gpu_layouts(gpus["h100-sxm-80gb"], allow_mig=False) == with_mig[:1]
    ctx = build_context(_inputs(catalogs, allow_mig=False), PlanningOptions(), load_model_arch)
    assert not any(lay.is_mig for lay in ctx.layouts)


def test_what_only_building_can_find_out(catalogs) -> None:
    inputs = _inputs(catalogs)
    inputs.workload.services[0].model = "no-such-model"
    with pytest.raises(PlanInputError, match=r"^services\[0\]\.model: "):
        build_context(inputs, PlanningOptions(), load_model_arch)
    nothing = _inputs(catalogs, markets=["spot"], clouds=["no-such-cloud"])
    with pytest.raises(PlanInfeasible, match="no GPU is on offer"):
        build_context(nothing, PlanningOptions(), load_model_arch)
