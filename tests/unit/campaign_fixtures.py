"""Campaigns the campaign tests share: a variant manifest with checkpoint folders (config.json and a size, no
weights: the emitters read sizes from the manifest), requests built like the CLI builds them, and the kubelet's
`$(VAR)` expansion to run a Job's command outside a cluster."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from vlmopt.campaign.build import Campaign, CampaignRequest, plan_campaign
from vlmopt.campaign.command import BenchmarkSettings
from vlmopt.hw.catalog import load_gpu_catalog
from vlmopt.paths import data_file
from vlmopt.schemas.catalog import PriceCatalog
from vlmopt.schemas.common import load_model
from vlmopt.schemas.deploy import DeploySettings

GIB = 2**30
BUCKETS = {"aws": "s3://vlmopt-test-models/qwen", "gcp": "gs://vlmopt-test-models/qwen"}
BENCH_ARGS = ["--concurrency", "1,4,16", "--num-prompts", "64", "--slo", "ttft_p95_ms=500,tpot_p95_ms=50",
              "--max-num-seqs", "64", "--server-arg=--max-num-batched-tokens=8192"]


def write_manifest(root: Path, model: str = "qwen2.5-vl-3b", sizes: dict[str, float] | None = None) -> Path:
    """variants/<model>/manifest.json with one folder per variant, as `vlmopt quantize` lays them out."""
    sizes = sizes or {"bf16": 7.5, "fp8": 4.2, "awq": 2.9}
    folder = root / "variants" / model
    variants = []
    schemes = {"bf16": ("none", "BF16"), "fp8": ("fp8", "FP8_DYNAMIC"), "awq": ("awq", "W4A16_ASYM"),
               "int8": ("int8", "W8A8")}
    for name, gib in sizes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        config = {"architectures": ["Qwen2_5_VLForConditionalGeneration"]}
        (folder / name / "config.json").write_text(json.dumps(config))
        method, scheme = schemes[name]
        variants.append({"name": name, "method": method, "scheme": scheme, "path": name,
                         "bytes_on_disk": int(gib * GIB)})
    manifest = {"base_model": "Qwen/Qwen2.5-VL-3B-Instruct", "architecture": "Qwen2_5_VLForConditionalGeneration",
                "variants": variants}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder / "manifest.json"


def bench(args: list[str] | None = None, **fields: Any) -> BenchmarkSettings:
    defaults: dict[str, Any] = {"concurrency": [1, 4, 16], "num_prompts": 64,
                                "slo": {"ttft_p95_ms": 500.0, "tpot_p95_ms": 50.0}}
    return BenchmarkSettings(args=list(BENCH_ARGS if args is None else args), **{**defaults, **fields})


def settings(**fields: Any) -> DeploySettings:
    storage = {"bucket": BUCKETS, **fields.pop("storage", {})}
    return DeploySettings.model_validate({"storage": storage, **fields})


def request(manifest: Path, out: Path, **fields: Any) -> CampaignRequest:
    prices_path = data_file("prices.yaml")
    base: dict[str, Any] = {
        "name": "qwen-c1", "manifest_path": manifest, "out_dir": out, "engine": "kubernetes",
        "results": "s3://vlmopt-test-results/campaigns", "bench": bench(), "gpu_catalog": load_gpu_catalog(),
        "prices": load_model(PriceCatalog, prices_path), "prices_label": "vlmopt/data/prices.yaml",
        "targets": ["h100-sxm-80gb:3g.40gb", "l4-24gb"], "cloud": "aws", "region": "us-east-1",
        "settings": settings(),
    }
    return CampaignRequest(**{**base, **fields})


@contextmanager
def working_folder(path: Path):
    """Checkpoint folders are named relative to the folder vlmopt runs in, as a plan names them."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


def make(tmp_path: Path, **fields: Any) -> Campaign:
    manifest = write_manifest(tmp_path, **fields.pop("manifest", {}))
    with working_folder(tmp_path):
        return plan_campaign(request(manifest, tmp_path / "campaigns" / fields.get("name", "qwen-c1"), **fields))


def documents(files: dict[str, str], prefix: str = "clusters/") -> list[tuple[str, dict]]:
    return [(path, doc) for path, text in sorted(files.items())
            if path.startswith(prefix) and path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and "kind" in doc]


def jobs(files: dict[str, str]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in documents(files) if d["kind"] == "Job"
            and d["spec"]["template"]["spec"]["containers"][0]["name"] == "benchmark"}


def kubelet_expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of `$(VAR)` in a container's command and args, ported from kubernetes
    third_party/forked/golang/expansion/expand.go: `$$` is a literal `$`, an unknown `$(NAME)` stays as written."""
    out: list[str] = []
    checkpoint = cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            if nxt == "$":
                read, advance = "$", 1
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    read, advance = "$(", 1
                else:
                    name = text[cursor + 2:close]
                    read, advance = env.get(name, f"$({name})"), close - cursor
            else:
                read, advance = "$" + nxt, 1
            out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]
