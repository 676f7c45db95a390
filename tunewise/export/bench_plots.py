"""Plots of a bench.json: throughput against batch size, and latency (p50 bars, p95 whiskers) per variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_bench(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write bench_throughput.png and bench_latency.png into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = report["variants"]
    if not variants:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    subtitle = f"{report['device']}, {report['new_tokens']} new tokens"

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    for name, v in variants.items():
        rows = v["throughput"]
        ax.plot([r["batch_size"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(report["batch_sizes"], [str(b) for b in report["batch_sizes"]])
    ax.set_xlabel("batch size")
    ax.set_ylabel("generated tokens/s")
    ax.set_title(f"inference throughput ({subtitle})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    throughput = out / "bench_throughput.png"
    fig.savefig(throughput)
    plt.close(fig)

    names = list(variants)
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.4), dpi=110)
    for ax, key, title in zip(axes, ("ttft_ms", "per_token_ms"), ("time to first token", "time per output token")):
        stats = [variants[n].get(key) or {"p50": 0.0, "p95": 0.0} for n in names]
        p50 = [s["p50"] for s in stats]
        p95 = [s["p95"] for s in stats]
        ax.bar(names, p50, color="tab:blue", alpha=0.8, label="p50")
        ax.errorbar(names, p50, yerr=[[0] * len(p50), [max(b - a, 0) for a, b in zip(p50, p95)]], fmt="none",
                    ecolor="black", capsize=4, label="p95")
        ax.set_title(f"{title} (batch 1)", fontsize=10)
        ax.set_ylabel("ms")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    latency = out / "bench_latency.png"
    fig.savefig(latency)
    plt.close(fig)
    return [throughput, latency]
