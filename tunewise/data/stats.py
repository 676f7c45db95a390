"""Token-length statistics of encoded examples: percentiles, histograms, trained-token share, label counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from tunewise.catalog import N_, _, translate
from tunewise.lm.chat import IGNORE_INDEX, Encoded

# the stage names data_report.json keeps (tunewise/data/prepare.py), marked here to be shown in the user's language
STAGE_NAMES = (N_("read"), N_("valid"), N_("unique"), N_("within token limits"), N_("near-unique"),
               N_("selected (max_examples)"), N_("split, after overlap removal"), N_("with augmented train rows"))


@dataclass
class TokenCounts:
    """What one example costs in tokens, as training sees it (after any truncation)."""

    prompt: int  # tokens before the first trained token
    total: int
    trained: int
    truncated: bool = False

    @property
    def answer(self) -> int:
        """Answer tokens: the trained ones (assistant turns with their end-of-turn token)."""
        return self.trained

    @classmethod
    def of(cls, encoded: Encoded, *, truncated: bool | None = None) -> "TokenCounts":
        first = next((i for i, x in enumerate(encoded.labels) if x != IGNORE_INDEX), len(encoded.labels))
        return cls(prompt=first, total=len(encoded), trained=encoded.n_trained, truncated=encoded.truncated if truncated is None else truncated)


def percentiles(values: Iterable[int]) -> dict[str, float]:
    """p50 / p90 / p99 / max (and min, mean) of a list of lengths; zeros for an empty list."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"min": 0, "p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"min": int(arr.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": int(arr.max()), "mean": round(float(arr.mean()), 2)}


def histogram(values: Iterable[int], bins: int = 20) -> dict[str, list[float]]:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(arr, bins=bins)
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def token_stats(counts: list[TokenCounts]) -> dict[str, Any]:
    """The statistics of one split."""
    total = sum(c.total for c in counts)
    trained = sum(c.trained for c in counts)
    out: dict[str, Any] = {"examples": len(counts), "tokens": total, "trained_tokens": trained,
                           "trained_share": round(trained / total, 4) if total else 0.0,
                           "truncated": sum(1 for c in counts if c.truncated)}  # fmt: skip
    for part in ("prompt", "answer", "total"):
        values = [getattr(c, part) for c in counts]
        out[part] = {**percentiles(values), "histogram": histogram(values)}
    return out


def label_counts(labels: Iterable[Any]) -> dict[str, int]:
    counts = Counter("(none)" if x is None else str(x) for x in labels)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class DataReport:
    """What ``prepare_data`` did: counts per stage and reason, token statistics and label counts per split."""

    counts: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    overlap: dict[str, Any] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, str] = field(default_factory=dict)  # file -> "completion (input -> output)": how it was read
    task: dict[str, Any] = field(default_factory=dict)  # type (classification / generation), labels, label_field
    files: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataReport":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def plot_token_histograms(report: DataReport | dict[str, Any], path: str) -> str:
    """A PNG with the prompt / answer / total token-length histograms of each split (from the report's bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = report.to_dict() if isinstance(report, DataReport) else report
    tokens = data.get("tokens", {})
    parts = ("prompt", "answer", "total")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, part in zip(axes, parts):
        for split, stats in tokens.items():
            h = stats.get(part, {}).get("histogram", {})
            if h.get("counts"):
                edges = h["edges"]
                ax.stairs(h["counts"], edges, label=split)
        ax.set_title(f"{part} tokens")
        ax.set_xlabel("tokens")
    axes[0].set_ylabel("examples")
    axes[-1].legend()
    fig.tight_layout()
    from tunewise.data.io import atomic_open

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def describe_loading(data: dict[str, Any]) -> list[str]:
    """One line per file saying how it was read ("format: completion (input -> output)"), the task, and what
    cleaning and truncation changed."""
    from pathlib import Path

    shapes = data.get("shapes") or data.get("formats") or {}
    lines = [_("format: {desc}").format(desc=desc) + (f"  [{Path(src).name}]" if len(shapes) > 1 else "")
             for src, desc in shapes.items()]
    task = data.get("task") or {}
    if task.get("type") == "classification":
        labels = task.get("labels") or []
        shown = ", ".join(labels[:12]) + (_(", ... ({n} in all)").format(n=len(labels)) if len(labels) > 12 else "")
        lines.append(_("task: classification, {n} labels ({shown}); split stratified by {field}").format(
            n=len(labels), shown=shown, field=task.get("label_field")))
    counts = data.get("counts", {})
    if counts.get("pairs"):
        lines.append(_("preference pairs: {n:,} (prompt, chosen, rejected)").format(n=counts["pairs"]))
    if counts.get("desirable") or counts.get("undesirable"):
        lines.append(_("marked answers (KTO): {desirable:,} desirable, {undesirable:,} undesirable").format(
            desirable=counts.get("desirable", 0), undesirable=counts.get("undesirable", 0)))
    cleaned = counts.get("control_chars_cleaned") or {}
    if cleaned.get("rows"):
        lines.append(_("control characters removed: {chars:,} in {rows:,} rows (data.clean_control_chars)").format(
            chars=cleaned["chars"], rows=cleaned["rows"]))
    if counts.get("truncated_prompt"):
        lines.append(_("user messages cut to fit data.max_tokens: {n:,} rows (data.overlength: truncate)").format(
            n=counts["truncated_prompt"]))
    return lines


def render_report(report: DataReport | dict[str, Any], console: Any) -> None:
    """Print a data report as rich tables: stages, rejections, token lengths, labels, overlap."""
    from rich.table import Table

    data = report.to_dict() if isinstance(report, DataReport) else report
    counts = data.get("counts", {})
    for line in describe_loading(data):
        console.print(line, highlight=False, markup=False)
    stages = Table(title=_("rows per stage"))
    stages.add_column(_("stage"))
    stages.add_column(_("rows"), justify="right")
    for row in data.get("stages", []):
        stages.add_row(translate(row["stage"]), f"{row['rows']:,}")
    for split in (N_("train"), N_("val"), N_("test")):
        stages.add_row(f"  {translate(split)}", f"{counts.get(split, 0):,}")
    console.print(stages)
    if counts.get("rejected"):
        from tunewise.errors import REASONS

        rej = Table(title=_("rejected rows ({n:,}; see rejects.jsonl)").format(n=counts.get("rejected_total", 0)))
        rej.add_column(_("reason"))
        rej.add_column(_("rows"), justify="right")
        rej.add_column(_("meaning"))
        for reason, n in counts["rejected"].items():
            rej.add_row(reason, f"{n:,}", translate(REASONS[reason]) if reason in REASONS else "")
        console.print(rej)
    tok = Table(title=_("tokens (p50 / p90 / p99 / max), as training sees them"))
    for col in (N_("split"), N_("prompt"), N_("answer"), N_("total"), N_("trained share"), N_("truncated")):
        tok.add_column(translate(col), justify="left" if col == "split" else "right")
    for split, s in data.get("tokens", {}).items():
        if not s.get("examples"):
            continue
        fmt = lambda p: f"{p['p50']:g} / {p['p90']:g} / {p['p99']:g} / {p['max']:g}"  # noqa: E731
        tok.add_row(translate(split), fmt(s["prompt"]), fmt(s["answer"]), fmt(s["total"]), f"{s['trained_share']:.1%}", str(s.get("truncated", 0)))
    console.print(tok)
    labels = data.get("labels", {})
    names = sorted({k for v in labels.values() for k in v})
    if names and names != ["(none)"]:
        lab = Table(title=_("examples per label"))
        lab.add_column(_("label"))
        for split in labels:
            lab.add_column(translate(split), justify="right")
        for name in names[:50]:
            lab.add_row(name, *(str(labels[s].get(name, 0)) for s in labels))
        console.print(lab)
    overlap = {k: v for k, v in data.get("overlap", {}).items() if v.get("exact") or v.get("near")}
    if overlap:
        console.print(_("overlap between splits: ") + "; ".join(
            _("{pair}: {exact} exact, {near} near, {removed} removed").format(pair=k, **v) for k, v in overlap.items()))
    aug = counts.get("augmented") or {}
    if aug.get("total") or aug.get("rejected"):
        console.print(_("augmented train rows: {shuffle} shuffled lists, {paraphrase} paraphrases ({rejected} generations "
                        "rejected)").format(shuffle=aug.get("shuffle", 0), paraphrase=aug.get("paraphrase", 0),
                                            rejected=aug.get("rejected", 0)))
