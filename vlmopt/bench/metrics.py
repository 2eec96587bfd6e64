"""Load-point metrics with `vllm bench serve`'s definitions and key names (vllm/benchmarks/serve.py upstream:
https://github.com/vllm-project/vllm/blob/main/vllm/benchmarks/serve.py; docs/benchmark.md compares the two).

Pure functions over RequestResult lists. Definitions:
- TTFT: first token event - send; E2EL: last token event - send; ITL: gaps between token events (per SSE event,
  not per token, as vLLM counts them); TPOT: (E2EL - TTFT) / (output_tokens - 1), only for requests with more than
  one output token (for goodput such requests count as TPOT 0, as in vLLM).
- request/output/total token throughput: completed requests, summed usage output tokens and summed usage
  prompt+output tokens over the point's duration (first dispatch to the end of the last request).
- goodput (DistServe, https://arxiv.org/abs/2401.09670): completed requests meeting *every* per-request threshold,
  per second.
Failed requests are left out of all latency statistics and counted in `failed` and the `errors` breakdown.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .client import RequestResult

DEFAULT_PERCENTILES = (90.0, 95.0, 99.0)
_SLO_KEY = re.compile(r"^(ttft|tpot|itl|e2el)_(mean|median|p\d{1,2}(?:\.\d+)?)_ms$")


def parse_slo(text: str | None) -> dict[str, float]:
    """'ttft_p95_ms=500,tpot_p95_ms=50' -> {'ttft_p95_ms': 500.0, 'tpot_p95_ms': 50.0}; ValueError names the key."""
    slo: dict[str, float] = {}
    if not text:
        return slo
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise ValueError(f"SLO item {item.strip()!r} is not KEY=MILLISECONDS")
        if not _SLO_KEY.match(key):
            raise ValueError(
                f"SLO key {key!r} is not <ttft|tpot|itl|e2el>_<mean|median|pNN>_ms (e.g. ttft_p95_ms)"
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"SLO {key}: {value!r} is not a number of milliseconds") from None
        if not number > 0:
            raise ValueError(f"SLO {key}: must be > 0 ms")
        slo[key] = number
    return slo


def slo_stat_key(slo_key: str) -> str:
    """'ttft_p95_ms' -> 'p95_ttft_ms' (vLLM's result key for that statistic)."""
    match = _SLO_KEY.match(slo_key)
    if not match:
        raise ValueError(f"not an SLO key: {slo_key!r}")
    metric, stat = match.groups()
    return f"{stat}_{metric}_ms"


def slo_percentiles(slo: Mapping[str, float]) -> list[float]:
    extra = []
    for key in slo:
        stat = _SLO_KEY.match(key).group(2)  # type: ignore[union-attr]
        if stat.startswith("p"):
            extra.append(float(stat[1:]))
    return extra


def per_request_thresholds(slo: Mapping[str, float]) -> dict[str, float]:
    """Goodput thresholds in ms per metric (the tightest given for it); ITL is not a per-request quantity."""
    thresholds: dict[str, float] = {}
    for key, value in slo.items():
        metric = key.split("_", 1)[0]
        if metric in ("ttft", "tpot", "e2el"):
            thresholds[metric] = min(value, thresholds.get(metric, float("inf")))
    return thresholds


def _pword(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def latency_stats(name: str, values_s: list[float], percentiles: Iterable[float]) -> dict[str, float | None]:
    """mean/median/std/pNN of one metric in ms; None (not vLLM's 0) when there is no value, so an empty point
    cannot pass for a fast one."""
    keys = [f"mean_{name}_ms", f"median_{name}_ms", f"std_{name}_ms"] + [
        f"p{_pword(p)}_{name}_ms" for p in percentiles
    ]
    if not values_s:
        return dict.fromkeys(keys, None)
    ms = np.asarray(values_s, dtype=float) * 1000.0
    out: dict[str, float | None] = {
        f"mean_{name}_ms": float(np.mean(ms)),
        f"median_{name}_ms": float(np.median(ms)),
        f"std_{name}_ms": float(np.std(ms)),
    }
    for p in percentiles:
        out[f"p{_pword(p)}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def image_tokens_of(result: RequestResult, tokens_per_image: Mapping[str, int]) -> int | None:
    """Image tokens of one request from per-size counts measured on the server; None if a size is unknown."""
    total = 0
    for size in result.image_sizes:
        if size not in tokens_per_image:
            return None
        total += tokens_per_image[size]
    return total


def compute_point_metrics(
    results: list[RequestResult],
    duration_s: float,
    slo: Mapping[str, float] | None = None,
    tokens_per_image: Mapping[str, int] | None = None,
    percentiles: Iterable[float] = DEFAULT_PERCENTILES,
) -> dict[str, Any]:
    """All LoadPoint metric fields for one point."""
    slo = dict(slo or {})
    pcts = sorted(set(percentiles) | set(slo_percentiles(slo)))
    ok = [r for r in results if r.success]
    failed = [r for r in results if not r.success]
    dur = duration_s if duration_s > 0 else float("nan")

    ttfts, e2els, itls, tpots, all_tpots = [], [], [], [], []
    total_in = total_out = 0
    for r in ok:
        out_tokens = r.output_tokens or 0
        total_in += r.prompt_tokens or 0
        total_out += out_tokens
        ttft, latency = r.ttft or 0.0, r.latency or 0.0
        ttfts.append(ttft)
        e2els.append(latency)
        itls.extend(r.itl)
        tpot = 0.0
        if out_tokens > 1:
            tpot = (latency - ttft) / (out_tokens - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)

    metrics: dict[str, Any] = {
        "num_prompts": len(results),
        "completed": len(ok),
        "failed": len(failed),
        "duration": duration_s,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / dur,
        "output_throughput": total_out / dur,
        "total_token_throughput": (total_in + total_out) / dur,
        "mean_prompt_tokens": (total_in / len(ok)) if ok else None,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        metrics.update(latency_stats(name, values, pcts))

    thresholds = per_request_thresholds(slo)
    if thresholds:
        per_metric = {"ttft": ttfts, "tpot": all_tpots, "e2el": e2els}
        good = sum(
            all(per_metric[m][i] * 1000.0 <= limit for m, limit in thresholds.items()) for i in range(len(ok))
        )
        metrics["request_goodput"] = good / dur
        metrics["good_fraction"] = (good / len(results)) if results else None
    else:
        metrics["request_goodput"] = None
        metrics["good_fraction"] = None
    metrics["meets_slo"] = point_meets_slo(metrics, slo) if slo else None

    images = sum(r.num_images for r in ok)
    metrics["images_per_s"] = images / dur
    metrics["image_token_share"] = None
    if tokens_per_image is not None and ok and total_in > 0:
        counts = [image_tokens_of(r, tokens_per_image) for r in ok]
        if all(c is not None for c in counts):
            metrics["image_token_share"] = sum(counts) / total_in  # type: ignore[arg-type]
    metrics["errors"] = dict(Counter(r.error_kind or "unknown" for r in failed))
    metrics["error_examples"] = {
        kind: next(r.error for r in failed if (r.error_kind or "unknown") == kind) or ""
        for kind in metrics["errors"]
    }
    return metrics


# Beyond this relative difference between the text tokens asked for and those the server counted, a point measured
# another workload than requested (docs/benchmark.md#prompt-sizing).
INPUT_TOKENS_TOLERANCE = 0.05


def input_token_fields(
    results: list[RequestResult],
    requested: int | None,
    tokens_per_image: Mapping[str, int] | None,
    chat_template_tokens: int | None,
) -> dict[str, Any]:
    """Requested vs actual prompt tokens of one point, split into text and image where the probe measured them.

    Text tokens per request = usage.prompt_tokens - its image tokens - the chat template's tokens; with the
    template's share unknown (no tokenizer), it stays in the text count, so a mismatch then also shows the template.
    """
    fields: dict[str, Any] = {"requested_input_tokens": requested, "mean_text_input_tokens": None,
                              "mean_image_input_tokens": None, "input_tokens_deviation": None,
                              "input_tokens_mismatch": False}
    counted = [r for r in results if r.success and r.prompt_tokens is not None]
    if not counted:
        return fields
    images = [image_tokens_of(r, tokens_per_image or {}) if r.image_sizes else 0 for r in counted]
    if any(n is None for n in images):
        return fields  # an image size the probe did not measure: text and image cannot be told apart
    template = chat_template_tokens or 0
    text = [r.prompt_tokens - n - template for r, n in zip(counted, images, strict=True)]  # type: ignore[operator]
    fields["mean_image_input_tokens"] = float(np.mean(images))
    fields["mean_text_input_tokens"] = float(np.mean(text))
    if requested:
        deviation = fields["mean_text_input_tokens"] / requested - 1.0
        fields["input_tokens_deviation"] = deviation
        fields["input_tokens_mismatch"] = abs(deviation) > INPUT_TOKENS_TOLERANCE
    return fields


def point_meets_slo(metrics: Mapping[str, Any], slo: Mapping[str, float]) -> bool:
    """Every SLO statistic present and within its limit, and no failed request (a failure cannot meet an SLO)."""
    if metrics.get("completed", 0) == 0 or metrics.get("failed", 0) > 0:
        return False
    for key, limit in slo.items():
        value = metrics.get(slo_stat_key(key))
        if value is None or value > limit:
            return False
    return True
