"""The summary table of `vlmopt quantize` fits an 80-column terminal with every header whole, even with long
variant names, rejected variants and a long output path."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from vlmopt.cli.quantize import SUMMARY_COLUMNS, render_summary
from vlmopt.quantize import METHODS, QuantizeResult, VariantOutcome
from vlmopt.schemas import Fidelity, Variant, VariantManifest


def _variant(name: str, method: str, scheme: str, size: int, kl: float | None, top1: float | None) -> Variant:
    fidelity = Fidelity(mean_kl=kl, top1_agreement=top1, prompts=8, measured_how="test") if kl is not None else None
    return Variant(name=name, method=method, scheme=scheme, path=name, bytes_on_disk=size, wall_time_s=1234.5,
                   peak_memory_bytes=31 * 1024**3, fidelity=fidelity)


def _result() -> QuantizeResult:
    variants = [_variant("bf16", "none", "BF16", 16_583_000_000, None, None),
                _variant("fp8", "fp8", "FP8_DYNAMIC", 9_000_000_000, 6.1e-5, 0.925),
                _variant("int8", "int8", "W8A8", 9_000_000_000, 7.2e-5, 0.9),
                _variant("gptq-with-a-long-suffix", "gptq", "W4A16", 5_500_000_000, 1.2e-4, 0.85)]
    manifest = VariantManifest(base_model="/models/Qwen2.5-VL-7B-Instruct",
                               architecture="Qwen2_5_VLForConditionalGeneration", variants=variants)
    outcomes = [VariantOutcome("fp8", METHODS["fp8"], "skipped", variant=variants[1]),
                VariantOutcome("int8", METHODS["int8"], "created", variant=variants[2]),
                VariantOutcome("gptq-with-a-long-suffix", METHODS["gptq"], "created", variant=variants[3]),
                VariantOutcome("awq-with-a-long-suffix", METHODS["awq"], "rejected", message="KL too high")]
    return QuantizeResult(Path("/home/someone/projects/variants/Qwen2.5-VL-7B-Instruct/manifest.json"), manifest,
                          outcomes, [])


def test_fits_80_columns_with_whole_headers() -> None:
    console = Console(width=80, record=True, color_system=None)
    console.print(render_summary(_result()))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in "\n".join(lines)
    headers = [h for h, _ in SUMMARY_COLUMNS]
    header_line = next(line for line in lines if line.lstrip().startswith(headers[0]))
    positions = [header_line.find(h) for h in headers]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), header_line
    text = "\n".join(lines)
    for cell in ("W4A16", "FP8_DYNAMIC", "15.44G", "1.84x", "1234s", "31.00G", "6.1e-05", "92.5%", "(kept)"):
        assert cell in text, cell
