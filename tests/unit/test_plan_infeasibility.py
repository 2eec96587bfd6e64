"""Infeasible workloads name the binding constraint in one line: memory, SLO, quality floor, quota, or an input
that names an unknown GPU (caught earlier, by PlanInputs)."""

from __future__ import annotations

import pytest

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.plan.errors import PlanInfeasible, PlanInputError
from vlmopt.plan.inputs import PlanInputs, PlanningOptions
from vlmopt.plan.planner import make_plan
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.workload import Workload

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def catalogs():
    return load_gpu_catalog(), load_model(PriceCatalog, data_file("prices.yaml"))


def _plan(wl: Workload, catalogs, attribute_levers: bool = True):
    inputs = PlanInputs(workload=wl, gpu_catalog=catalogs[0], price_catalog=catalogs[1])
    return make_plan(inputs, PlanningOptions(attribute_levers=attribute_levers))


def _workload(**service) -> Workload:
    base = {"name": "s", "model": "qwen2.5-vl-7b", "peak_rps": 5, "input_tokens": 256, "output_tokens": 128,
            "slo": {"ttft_p95_ms": 1000, "tpot_p95_ms": 50}}
    base.update(service)
    return Workload(name="t", services=[base])


def test_model_too_large_names_the_memory_constraint(catalogs) -> None:
    # 72B in bf16 is ~146 GB of weights: only a B200 holds it, so leave the B200 out.
    wl = _workload(model="qwen2.5-vl-72b", variants=["bf16"], max_model_len=32768)
    wl.constraints.gpus = ["h100-sxm-80gb", "h200-sxm-141gb", "a100-80gb-sxm"]
    with pytest.raises(PlanInfeasible) as err:
        _plan(wl, catalogs, attribute_levers=False)
    msg = str(err.value)
    assert "fits qwen2.5-vl-72b bf16 at max_model_len 32768 on one device" in msg
    assert "h200-sxm-141gb" in msg and "weights need" in msg


def test_slo_below_reach_names_the_slo_field(catalogs) -> None:
    wl = _workload(slo={"tpot_p95_ms": 0.5})
    with pytest.raises(PlanInfeasible, match=r"services\[0\]\.slo\.tpot_p95_ms = 0.5 ms is below what any"):
        _plan(wl, catalogs, attribute_levers=False)


def test_quality_floor_and_quota_infeasibility(catalogs) -> None:
    with pytest.raises(PlanInfeasible, match=r"services\[0\]\.quality"):
        _plan(_workload(variants=["awq"], quality={"max_kl": 0.001}), catalogs, attribute_levers=False)
    wl = _workload(peak_rps=200)
    wl.constraints.gpus = ["l4-24gb"]
    wl.constraints.max_gpus = {"l4-24gb": 1}
    with pytest.raises(PlanInfeasible, match=r"constraints\.max_gpus"):
        _plan(wl, catalogs, attribute_levers=False)
    wl.constraints.gpus = ["no-such-gpu"]
    with pytest.raises(PlanInputError, match=r"constraints\.gpus: unknown GPU"):
        _plan(wl, catalogs, attribute_levers=False)
