"""PlanInputs holds every cross-field rule of the planner's inputs: constructing one with a broken rule raises
PlanInputError with one line naming the field; rules about one file alone are the workload schema's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.plan.errors import PlanInputError
from vlmopt.plan.inputs import PlanInputs, load_plan_inputs
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.inventory import GpuInventory, InventoryGpu
from vlmopt.schemas.workload import Workload

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def catalogs():
    return load_gpu_catalog(), load_model(PriceCatalog, data_file("prices.yaml"))


def _workload(**constraints) -> Workload:
    return Workload(name="t", constraints=constraints, services=[{
        "name": "a", "model": "qwen2.5-vl-7b", "peak_rps": 1, "input_tokens": 64, "output_tokens": 32,
        "slo": {"ttft_p95_ms": 1000}}])


def _refused(match: str, **fields) -> str:
    with pytest.raises(PlanInputError, match=match) as err:
        PlanInputs(**fields)
    message = str(err.value)
    assert "\n" not in message and "validation error" not in message
    return message


def test_defaults_name_source_and_availability(catalogs) -> None:
    inputs = PlanInputs(workload=_workload(availability=0.99), gpu_catalog=catalogs[0], price_catalog=catalogs[1])
    assert (inputs.mode, inputs.plan_name, inputs.source, inputs.availability_target) == ("cloud", "t", "bundled:t",
                                                                                          0.99)
    override = inputs.model_copy(update={"availability": 0.9999, "name": "n", "workload_ref": "w.yaml"})
    assert (override.availability_target, override.plan_name, override.source) == (0.9999, "n", "w.yaml")


def test_mode_and_its_required_inputs(catalogs) -> None:
    gpus, prices = catalogs
    _refused(r"^mode \(--mode\): must be 'cloud' or 'fleet', got 'moon'$", workload=_workload(), gpu_catalog=gpus,
             price_catalog=prices, mode="moon")
    _refused(r"^inventory \(--inventory\): fleet mode needs", workload=_workload(), gpu_catalog=gpus, mode="fleet")
    _refused(r"^prices: cloud mode needs a price catalog$", workload=_workload(), gpu_catalog=gpus)
    fleet = GpuInventory(source="t", gpus=[InventoryGpu(index=0, name="NVIDIA L4", memory_total_gib=22.5)])
    assert PlanInputs(workload=_workload(), gpu_catalog=gpus, mode="fleet", inventory=fleet).price_catalog is None


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1])
def test_availability_override_is_a_probability(catalogs, value: float) -> None:
    _refused(r"^availability \(--availability\): must be between 0 and 1 \(exclusive\)", workload=_workload(),
             gpu_catalog=catalogs[0], price_catalog=catalogs[1], availability=value)


def test_gpus_named_anywhere_must_be_in_the_catalog(catalogs) -> None:
    gpus, prices = catalogs
    _refused(r"^constraints\.gpus: unknown GPU\(s\) \['z100'\]", workload=_workload(gpus=["z100"]),
             gpu_catalog=gpus, price_catalog=prices)
    _refused(r"^constraints\.max_gpus: unknown GPU\(s\) \['z100'\]", workload=_workload(max_gpus={"z100": 2}),
             gpu_catalog=gpus, price_catalog=prices)
    bad_prices = prices.model_copy(update={"prices": [prices.prices[0].model_copy(update={"gpu": "z100"})]})
    _refused(r"^prices\[0\]\.gpu: unknown GPU 'z100'", workload=_workload(), gpu_catalog=gpus,
             price_catalog=bad_prices)


def test_a_service_manifest_must_be_loaded(catalogs) -> None:
    wl = _workload()
    wl.services[0].manifest = "/nowhere/manifest.json"
    _refused(r"^services\[0\]\.manifest: /nowhere/manifest\.json was not loaded", workload=wl,
             gpu_catalog=catalogs[0], price_catalog=catalogs[1])


def test_single_file_rules_live_in_the_workload_schema() -> None:
    base = {"name": "a", "model": "m", "peak_rps": 1, "input_tokens": 1, "output_tokens": 1}
    with pytest.raises(ValidationError, match="slo: set at least one latency objective"):
        Workload(name="t", services=[{**base, "slo": {}}])
    with pytest.raises(ValidationError, match=r"duplicate service name\(s\) \['a'\]"):
        Workload(name="t", services=[{**base, "slo": {"ttft_p95_ms": 1}}, {**base, "slo": {"ttft_p95_ms": 2}}])


def test_load_plan_inputs_reads_the_bundled_default() -> None:
    inputs = load_plan_inputs(availability=0.995, name="x")
    assert inputs.source == "bundled:default" and inputs.workload.name == "default"
    assert inputs.availability_target == 0.995 and inputs.plan_name == "x"
    assert inputs.price_catalog is not None and inputs.inventory is None
    with pytest.raises(PlanInputError, match=r"^inventory \(--inventory\)"):
        load_plan_inputs(mode="fleet")
