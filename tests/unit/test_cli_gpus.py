"""`vlmopt gpus` through typer's CliRunner with a fake pynvml, plus one real run on this machine."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from tests.unit.nvml_fake import NVML_ERROR_LIBRARY_NOT_FOUND, make_fake_pynvml
from vlmopt.cli import app
from vlmopt.schemas.inventory import GpuInventory

runner = CliRunner()


def test_no_driver_prints_one_line_and_exits_0(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(fail={"nvmlInit": NVML_ERROR_LIBRARY_NOT_FOUND}))
    result = runner.invoke(app, ["gpus"])
    assert result.exit_code == 0
    assert result.output.strip().splitlines() == [
        "No GPUs listed: no NVIDIA driver: the NVML library (libnvidia-ml.so) was not found."
    ]


def test_no_driver_json_is_an_empty_inventory_with_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(fail={"nvmlInit": NVML_ERROR_LIBRARY_NOT_FOUND}))
    result = runner.invoke(app, ["gpus", "--json"])
    assert result.exit_code == 0
    inventory = GpuInventory.model_validate_json(result.stdout)
    assert inventory.gpus == [] and "no NVIDIA driver" in inventory.unavailable_reason


def test_table_shows_gpus_mig_state_and_profiles(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml())
    result = runner.invoke(app, ["gpus"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for words in ("NVIDIA H100 80GB HBM3", "h100-sxm-80gb", "0x233010DE", "on / on", "3g.40gb@4", "NVIDIA L4",
                  "GPU 0 MIG profiles", "0,2,4,6", "never changes MIG mode"):
        assert words in result.output, words


def test_json_round_trips_into_inventory_file(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml())
    result = runner.invoke(app, ["gpus", "--json"])
    assert result.exit_code == 0
    path = tmp_path / "fleet.json"
    path.write_text(result.stdout)
    assert json.loads(result.stdout)["gpus"][0]["catalog_id"] == "h100-sxm-80gb"
    offline = runner.invoke(app, ["gpus", "--inventory", str(path)], env={"COLUMNS": "200"})
    assert offline.exit_code == 0 and "3g.40gb@4" in offline.output


def test_bad_inventory_file_is_exit_2_naming_the_field(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("source: x\ngpus:\n  - {index: 0, name: A100}\n")
    result = runner.invoke(app, ["gpus", "--inventory", str(path)])
    assert result.exit_code == 2
    assert "gpus.0.memory_total_gib" in result.output and "Traceback" not in result.output


def test_real_machine_gives_a_clean_answer():
    # Whatever this machine has (no driver in CI, a GPU on a lent machine): exit 0 and no traceback.
    done = subprocess.run([sys.executable, "-c", "from vlmopt.cli import main; main()", "gpus"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "No GPUs listed: " in done.stdout or "GPUs (nvml)" in done.stdout
