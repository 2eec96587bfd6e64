#!/usr/bin/env python3
"""Read-only check of vlmopt's NVML code paths on a real GPU (run on a lent GPU machine).

Prints the inventory `vlmopt gpus --json` would print, then compares each GPU with its GPU catalog entry
(vlmopt/data/gpus.yaml): memory, MIG capability and, where NVML lists them, MIG profiles (ids, usable GiB, max counts,
legal starts). It also records whether NVML lists MIG profiles while MIG mode is off, and placements without
root. Nothing here changes MIG mode or creates instances.

    python scripts/check_nvml_gpu.py [--out inventory.json]

Exit codes: 0 inventory read (mismatches are reported, they are catalog data to review), 3 NVML unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from vlmopt.hw.catalog import inventory_mismatches, load_gpu_catalog, match_gpu  # noqa: E402
from vlmopt.hw.nvml import NvmlUnavailable, read_inventory  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the inventory JSON here")
    args = parser.parse_args()

    catalog = load_gpu_catalog()
    try:
        inventory = read_inventory(catalog=catalog)
    except NvmlUnavailable as exc:
        print(f"NVML unavailable: {exc}")
        return 3
    text = inventory.model_dump_json(indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")

    report: dict[str, object] = {"gpus": []}
    for gpu in inventory.gpus:
        spec = match_gpu(catalog, name=gpu.name, pci_device_id=gpu.pci_device_id)
        entry: dict[str, object] = {
            "index": gpu.index,
            "name": gpu.name,
            "pci_device_id": gpu.pci_device_id,
            "catalog_id": spec.id if spec else None,
            "mig_mode_current": gpu.mig_mode_current,
            # does NVML list MIG profiles / placements with MIG mode off and without root?
            "profiles_listed": len(gpu.mig_profiles),
            "placements_listed": sum(1 for p in gpu.mig_profiles if p.placements),
            "notes": gpu.notes,
        }
        entry["mismatches"] = inventory_mismatches(gpu, spec) if spec else ["not in the GPU catalog"]
        report["gpus"].append(entry)
    print("=== comparison with the GPU catalog (vlmopt/data/gpus.yaml) ===")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
