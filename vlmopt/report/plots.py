"""Draw the report's charts from the tables in `tables.py` and return them as PNG bytes.

Uses matplotlib's object API with the Agg canvas directly (no pyplot), so drawing never touches a display,
never changes the process-wide backend, and is safe to call from any thread.
Each function returns None when its table has nothing to draw; the document then says what is missing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .formatting import is_number, usd

DPI = 110
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
GOOD, BAD, NEUTRAL, HIGHLIGHT = "#2ca02c", "#d62728", "#7f7f7f", "#1f77b4"


@dataclass(frozen=True)
class RenderedPlot:
    name: str  # file stem: plots/<name>.png
    title: str
    alt: str  # what the chart shows, for screen readers and for the markdown
    png: bytes


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No 'Software'/date metadata: the same plan gives byte-identical images.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def waterfall_plot(waterfall: pd.DataFrame | None) -> RenderedPlot | None:
    if waterfall is None or waterfall.empty:
        return None
    fig, (ax,) = _figure(9, 4.2)
    labels = list(waterfall["step"])
    for i, row in enumerate(waterfall.itertuples()):
        low, high = sorted((row.start, row.end))
        if row.kind == "total":
            color = HIGHLIGHT
        elif row.kind == "residual":
            color = NEUTRAL
        else:
            color = GOOD if row.delta <= 0 else BAD
        ax.bar(i, high - low, bottom=low, color=color, width=0.6, edgecolor="black", linewidth=0.5)
        text = usd(row.end) if row.kind == "total" else ("−" if row.delta <= 0 else "+") + usd(abs(row.delta))
        ax.annotate(text, (i, high), ha="center", va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points")
        if i + 1 < len(waterfall):  # dotted connector to the next bar's starting level
            ax.plot([i + 0.3, i + 0.7], [row.end, row.end], color="black", linewidth=0.6, linestyle=":")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("$ per hour")
    levels = waterfall[["start", "end"]].to_numpy()
    low, high = min(0.0, float(levels.min())), float(levels.max())
    ax.set_ylim(low * 1.15, high * 1.15 if high > 0 else 1.0)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title("Cost per hour: baseline → levers → this plan")
    ax.grid(axis="y", alpha=0.3)
    return RenderedPlot("cost_waterfall", "Cost waterfall by lever",
                        "Bar chart from the baseline's $/hour through each lever's saving to this plan's $/hour",
                        _png(fig))


def _series_label(variant: str, device: str, multi_device: bool) -> str:
    return f"{variant} @ {device}" if multi_device else variant


def latency_plot(points: pd.DataFrame) -> RenderedPlot | None:
    """p50 (solid) and p95 (dashed) TTFT and E2EL against achieved request throughput, one colour per variant."""
    usable = points[points["request_throughput"].map(is_number) & (points["request_throughput"] > 0)]
    metrics = [("ttft", "TTFT"), ("e2el", "E2E latency")]
    has_any = any(usable[f"{m}_{s}_ms"].map(is_number).any() for m, _ in metrics for s in ("p50", "p95"))
    if usable.empty or not has_any:
        return None
    fig, axes = _figure(10, 4.2, ncols=2)
    groups = list(usable.groupby(["variant", "device"], sort=True))
    multi_device = usable["device"].nunique() > 1
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        for k, ((variant, device), frame) in enumerate(groups):
            frame = frame.sort_values("request_throughput")
            color = PALETTE[k % len(PALETTE)]
            for stat, style in (("p50", "-"), ("p95", "--")):
                col = f"{metric}_{stat}_ms"
                valid = frame[frame[col].map(is_number)]
                if valid.empty:
                    continue
                ax.plot(valid["request_throughput"], valid[col], style, marker="o", markersize=4, color=color,
                        label=f"{_series_label(variant, device, multi_device)} {stat}")
        ax.set_xlabel("request throughput (req/s)")
        ax.set_ylabel(f"{title} (ms)")
        ax.set_title(f"{title} vs throughput")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=PALETTE[k % len(PALETTE)], marker="o",
                      label=_series_label(v, d, multi_device)) for k, ((v, d), _) in enumerate(groups)]
    handles += [Line2D([], [], color="black", linestyle="-", label="p50"),
                Line2D([], [], color="black", linestyle="--", label="p95")]
    axes[1].legend(handles=handles, fontsize=8, loc="upper left")
    return RenderedPlot("latency_curves", "Latency vs throughput per variant",
                        "Line charts of p50 and p95 time-to-first-token and end-to-end latency against measured "
                        "request throughput, one colour per variant", _png(fig))


def pareto_plot(candidates: pd.DataFrame) -> RenderedPlot | None:
    both = candidates["usd_per_million_output_tokens"].map(is_number) & candidates["p95_latency_ms"].map(is_number)
    placed = candidates[both]
    if placed.empty:
        return None
    fig, (ax,) = _figure(9, 4.8)
    passing = placed[placed["slo"] == "pass"]
    failing = placed[placed["slo"] != "pass"]
    ax.scatter(failing["usd_per_million_output_tokens"], failing["p95_latency_ms"], marker="x", color=BAD,
               label="fails SLO or does not fit", alpha=0.8)
    ax.scatter(passing["usd_per_million_output_tokens"], passing["p95_latency_ms"], marker="o", color=GOOD,
               label="meets SLO", alpha=0.8)
    front = passing[passing["pareto_optimal"]].sort_values("usd_per_million_output_tokens")
    if len(front) > 0:
        ax.step(front["usd_per_million_output_tokens"], front["p95_latency_ms"], where="post", color=GOOD,
                linewidth=1)
        ax.scatter(front["usd_per_million_output_tokens"], front["p95_latency_ms"], s=160, facecolors="none",
                   edgecolors=GOOD, linewidths=1.5, label="Pareto front")
    chosen = placed[placed["chosen"]]
    if len(chosen) > 0:
        ax.scatter(chosen["usd_per_million_output_tokens"], chosen["p95_latency_ms"], marker="*", s=260,
                   color="gold", edgecolor="black", zorder=5, label="chosen by the plan")
    for row in pd.concat([front, chosen]).drop_duplicates().itertuples():
        ax.annotate(f"{row.variant} {row.gpu} {row.slice} {row.market}", (row.usd_per_million_output_tokens,
                    row.p95_latency_ms), fontsize=7, xytext=(4, 4), textcoords="offset points")
    costs = placed["usd_per_million_output_tokens"]
    if costs.min() > 0 and costs.max() / costs.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("$ per 1M output tokens")
    ax.set_ylabel("p95 latency (ms)")
    ax.set_title("Candidates: p95 latency against cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return RenderedPlot("pareto", "Pareto chart: p95 latency vs $ per 1M output tokens",
                        "Scatter of every candidate's p95 latency against its cost per million output tokens, "
                        "with the Pareto front and the chosen candidates marked", _png(fig))


def memory_plot(memory: pd.DataFrame) -> RenderedPlot | None:
    if memory.empty:
        return None
    height = max(2.6, 0.45 * len(memory) + 1.8)
    fig, (ax,) = _figure(9, height)
    labels = [f"{r.node_group}: {r.slice}" + (f"@{int(r.mig_start)}" if is_number(r.mig_start) else "")
              + f" ({r.variant})" for r in memory.itertuples()]
    y = list(range(len(memory)))
    left = [0.0] * len(memory)
    for col, name, color in (("weights_gib", "weights", PALETTE[0]), ("kv_cache_gib", "KV cache", PALETTE[1]),
                             ("reserve_gib", "runtime reserve", PALETTE[7]), ("other_gib", "other", PALETTE[4])):
        values = [float(v) if is_number(v) else 0.0 for v in memory[col]]
        if not any(values):
            continue
        ax.barh(y, values, left=left, color=color, label=name, height=0.6)
        left = [a + b for a, b in zip(left, values, strict=True)]
    usable = [float(v) if is_number(v) else None for v in memory["usable_gib"]]
    if any(u is not None for u in usable):
        ax.scatter([u for u in usable if u is not None], [yy for yy, u in zip(y, usable, strict=True)
                   if u is not None], marker="|", s=400, color="black", label="usable on slice", zorder=5)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("GiB")
    ax.set_title("Memory per slice (one bar per replica)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=5)
    return RenderedPlot("memory", "Memory use per MIG slice",
                        "Stacked horizontal bars of weights, KV cache and runtime reserve per replica, with the "
                        "slice's usable memory marked", _png(fig))


def quality_plot(quality: pd.DataFrame) -> RenderedPlot | None:
    scored = quality[quality["mean_kl"].map(is_number) | quality["top1_agreement"].map(is_number)]
    if scored.empty:
        return None
    fig, axes = _figure(9, 3.6, ncols=2)
    names = list(scored["variant"])
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    kl = [float(v) if is_number(v) else 0.0 for v in scored["mean_kl"]]
    top1 = [float(v) if is_number(v) else 0.0 for v in scored["top1_agreement"]]
    axes[0].bar(names, kl, color=colors)
    axes[0].set_title("Mean KL divergence vs bf16 (lower is better)")
    if min((v for v in kl if v > 0), default=1) > 0 and max(kl) / min((v for v in kl if v > 0), default=1) > 50:
        axes[0].set_yscale("log")
    axes[1].bar(names, top1, color=colors)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("Top-1 agreement with bf16 (higher is better)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    return RenderedPlot("quality", "Quality per variant",
                        "Bar charts of mean KL divergence and top-1 agreement of each variant against bf16",
                        _png(fig))
