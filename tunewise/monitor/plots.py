"""Training curves from metrics.jsonl, written as PNG files to RUN/plots/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewise.monitor.metrics import effective_records, number, read_metrics


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], number(r.get(key))) for r in records if number(r.get(key)) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def smooth(values: list[float], weight: float = 0.6) -> list[float]:
    """Exponential moving average, as TensorBoard's smoothing slider does it (debiased at the start)."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def write_plots(metrics_path: str | Path, out_dir: str | Path) -> list[Path]:
    """loss.png (train, smoothed train, eval), lr.png, memory.png and throughput.png, where the data exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in effective_records(read_metrics(metrics_path)) if r.get("kind") in ("train", "eval")]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def figure(name: str, title: str, ylabel: str, lines: list[tuple[list[float], list[float], dict[str, Any]]]) -> None:
        if not any(xs for xs, _, _ in lines):
            return
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        for xs, ys, style in lines:
            if xs:
                ax.plot(xs, ys, **style)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len([1 for xs, _, s in lines if xs and s.get("label")]) > 1:
            ax.legend()
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    steps, loss = _series(records, "loss")
    eval_steps, eval_loss = _series(records, "eval_loss")
    figure(
        "loss",
        "loss",
        "cross-entropy per trained token",
        [
            (steps, loss, {"label": "train", "alpha": 0.35, "color": "tab:blue"}),
            (steps, smooth(loss), {"label": "train (smoothed)", "color": "tab:blue"}),
            (eval_steps, eval_loss, {"label": "eval", "marker": "o", "color": "tab:orange"}),
        ],
    )
    figure("lr", "learning rate", "learning rate", [(*_series(records, "learning_rate"), {"color": "tab:green"})])
    figure("grad_norm", "gradient norm", "L2 norm", [(*_series(records, "grad_norm"), {"color": "tab:red"})])
    figure("memory", "peak memory", "MiB", [(*_series(records, "peak_rss_mb"), {"label": "peak RSS"}),
                                           (*_series(records, "cuda_peak_allocated_mb"), {"label": "CUDA allocated"}),
                                           (*_series(records, "cuda_peak_reserved_mb"), {"label": "CUDA reserved"})])
    figure("throughput", "throughput", "trained tokens/s", [(*_series(records, "tokens_per_s"), {"color": "tab:purple"})])
    # preference objectives (tunewise/objectives/): implicit rewards of the chosen and rejected answers, and how
    # often the chosen one is ahead, on the training batches and the validation pairs
    figure("rewards", "preference rewards", "beta x log-ratio to the reference", [
        (*_series(records, "rewards/chosen"), {"label": "chosen (train)", "color": "tab:green", "alpha": 0.6}),
        (*_series(records, "rewards/rejected"), {"label": "rejected (train)", "color": "tab:red", "alpha": 0.6}),
        (*_series(records, "eval_rewards/chosen"), {"label": "chosen (eval)", "color": "tab:green", "marker": "o"}),
        (*_series(records, "eval_rewards/rejected"), {"label": "rejected (eval)", "color": "tab:red", "marker": "o"}),
    ])
    figure("reward_accuracy", "preference accuracy", "share of pairs with chosen ahead", [
        (*_series(records, "rewards/accuracies"), {"label": "train", "alpha": 0.6}),
        (*_series(records, "eval_rewards/accuracies"), {"label": "eval", "marker": "o"}),
    ])
    return written
