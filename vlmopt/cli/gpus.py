"""`vlmopt gpus`: the GPU inventory through NVML (read-only), or from an inventory file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vlmopt.schemas.common import ContractError
from vlmopt.schemas.inventory import GpuInventory, InventoryGpu

from ._common import DATA_DIR_HELP, console, err_console, fail, use_data_dir


def _mode(value: bool | None) -> str:
    return "-" if value is None else ("on" if value else "off")


def _gpu_table(inventory: GpuInventory) -> Table:
    table = Table(title=f"GPUs ({inventory.source})", title_justify="left")
    for column in ("#", "name", "catalog", "PCI id", "memory used / total GiB", "MIG", "now / pending",
                   "instances"):
        table.add_column(column, justify="right" if column in ("#",) else "left")
    for gpu in inventory.gpus:
        used = f"{gpu.memory_used_gib:.1f}" if gpu.memory_used_gib is not None else "-"
        instances = ", ".join(
            f"{i.profile}@{i.start}" if i.start is not None else i.profile for i in gpu.mig_instances
        )
        table.add_row(
            str(gpu.index),
            gpu.name,
            gpu.catalog_id or "[yellow]not in catalog[/]",
            gpu.pci_device_id or "-",
            f"{used} / {gpu.memory_total_gib:.1f}",
            "capable" if gpu.mig_capable else "no",
            f"{_mode(gpu.mig_mode_current)} / {_mode(gpu.mig_mode_pending)}" if gpu.mig_capable else "-",
            instances or "-",
        )
    return table


def _profile_table(gpu: InventoryGpu) -> Table:
    table = Table(title=f"GPU {gpu.index} MIG profiles (as NVML reports them)", title_justify="left")
    for column in ("profile", "id", "GiB", "max", "free", "legal starts"):
        table.add_column(column, justify="left" if column in ("profile", "legal starts") else "right")
    for profile in gpu.mig_profiles:
        table.add_row(
            profile.name,
            str(profile.profile_id) if profile.profile_id is not None else "-",
            f"{profile.memory_gib:.2f}" if profile.memory_gib is not None else "-",
            str(profile.max_count) if profile.max_count is not None else "-",
            str(profile.free_count) if profile.free_count is not None else "-",
            ",".join(map(str, profile.placements)) or "-",
        )
    return table


def _render(inventory: GpuInventory) -> None:
    if inventory.driver_version:
        console.print(f"driver {inventory.driver_version}, CUDA {inventory.cuda_driver_version or '-'}, "
                      f"host {inventory.host or '-'}", highlight=False)
    console.print(_gpu_table(inventory))
    for gpu in inventory.gpus:
        if gpu.mig_profiles:
            console.print(_profile_table(gpu))
        for note in gpu.notes:
            console.print(f"[dim]GPU {gpu.index}: {note}[/]", highlight=False)
    from vlmopt.hw.catalog import default_catalog_path
    from vlmopt.paths import data_label

    catalog = data_label(default_catalog_path())
    console.print(f"[dim]Read-only: vlmopt never changes MIG mode. GPU catalog: {catalog}.[/]", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("gpus", help="List GPUs, memory, MIG mode and MIG profiles through NVML (read-only).")
    def gpus_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print the inventory as JSON (the --inventory schema)."),
        inventory_file: Path | None = typer.Option(
            None, "--inventory", help="Read a fleet inventory file instead of querying NVML.", dir_okay=False
        ),
        data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    ) -> None:
        from vlmopt.hw.catalog import load_gpu_catalog
        from vlmopt.hw.nvml import NvmlUnavailable, load_inventory, read_inventory

        use_data_dir(data_dir)
        try:
            catalog = load_gpu_catalog()
        except ContractError as exc:
            fail(str(exc))
        if inventory_file is not None:
            try:
                inventory = load_inventory(inventory_file, catalog=catalog)
            except ContractError as exc:
                fail(str(exc))
        else:
            try:
                inventory = read_inventory(catalog=catalog)
            except NvmlUnavailable as exc:
                if as_json:
                    typer.echo(GpuInventory(source="nvml", unavailable_reason=str(exc)).model_dump_json(indent=2))
                    err_console.print(f"No GPUs listed: {exc}.", highlight=False, soft_wrap=True)
                else:
                    console.print(f"No GPUs listed: {exc}.", highlight=False, soft_wrap=True)
                return
        if as_json:
            # Plain print: rich would wrap long lines and break the JSON for a pipe.
            typer.echo(inventory.model_dump_json(indent=2))
            return
        if not inventory.gpus:
            console.print(f"No GPUs in {inventory.source}.", highlight=False)
            return
        _render(inventory)
