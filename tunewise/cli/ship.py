"""``tunewise export | bench | serve | abtest``: ship a run (thin commands over tunewise.export and tunewise.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def _cli() -> Any:
    from tunewise.cli import common as cli

    cli.quiet_libraries()
    from tunewise.export.common import quiet_quantization_warnings

    quiet_quantization_warnings()
    return cli


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, e.g. 1,2,4,8") from None


def export_command(
    run: Path = typer.Argument(..., help="A trained run directory"),
    merge: bool = typer.Option(False, "--merge", help="Merge the adapter into the base (RUN/export/merged) and verify it"),
    quantize: Optional[list[str]] = typer.Option(None, "--quantize", "-q", help="int8, bnb-8bit or bnb-4bit (repeatable)"),
    sample: int = typer.Option(16, help="Test examples the merge is verified on"),
    atol: Optional[float] = typer.Option(None, help="Allowed max |logit difference| of the merge (default by dtype)"),
    max_examples: Optional[int] = typer.Option(None, help="Test examples the quantized quality is measured on"),
    gguf: Optional[list[str]] = typer.Option(None, "--gguf", help="GGUF for llama.cpp/Ollama, verified: f32, f16, bf16, "
                                                                  "q8_0, q5_1, q5_0, q4_1, q4_0 (repeatable)"),
    to_dir: Optional[Path] = typer.Option(None, "--to-dir", help="Write the shareable layout (model + card + exports) here"),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Upload the same layout to this hub repo (USER/NAME)"),
    private: bool = typer.Option(False, "--private", help="With --push-to-hub: create the repository private"),
) -> None:
    """Merge the adapter, quantize the model and/or write GGUF + Ollama Modelfile, verified and measured (RUN/export/)."""
    cli = _cli()
    from rich.table import Table

    from tunewise.runs import config_of_run

    if not (merge or quantize or gguf or to_dir or push_to_hub):
        cli.fail("say what to export: --merge, --quantize int8|bnb-8bit|bnb-4bit, --gguf f16|q8_0|..., --to-dir DIR "
                 "and/or --push-to-hub USER/NAME")
    cfg, run_dir = cli.guarded(lambda: config_of_run(run))
    if merge:
        from tunewise.export.merge import MergeVerificationError, merge_run

        try:
            report = cli.guarded(lambda: merge_run(cfg, run_dir.root, sample=sample, atol=atol))
        except MergeVerificationError as exc:
            cli.fail(str(exc), code=1)
        cli.console.print(
            f"[green]merged and verified[/] {report['peft_type']} -> {report['output']}: max |logit diff| "
            f"{report['max_abs_logit_diff']:.2e} over {report['positions_compared']} positions, greedy answers identical "
            f"on {report['greedy_identical']}/{report['greedy_compared']}; {_mb(report['size_bytes']['weights'])}"
        )
        if report.get("note"):
            cli.console.print(f"[yellow]note:[/] {report['note']}")
    if quantize:
        from tunewise.export.quantize import quantize_run

        report = cli.guarded(lambda: quantize_run(cfg, run_dir.root, quantize, max_examples=max_examples))
        before = report["before"]
        table = Table(title=f"quantized exports (quality on {report['n']} test examples)")
        for column in ("model", "weights on disk", *before["metrics"], "perplexity", "answers changed"):
            table.add_column(column, justify="left" if column == "model" else "right")
        table.add_row("unquantized", _mb(report["source_size_bytes"]["weights"]),
                      *[f"{v:.3f}" for v in before["metrics"].values()], f"{before['perplexity']:.3f}", "")
        for name in quantize:
            s = report["schemes"][name]
            after, change = s["after"], s["change"]
            table.add_row(name, f"{_mb(s['size_bytes']['weights'])} ({s['weights_ratio']:.0%})",
                          *[f"{after['metrics'][k]:.3f} ({change['metrics'][k]:+.3f})" for k in before["metrics"]],
                          f"{after['perplexity']:.3f} ({change['perplexity']:+.3f})", str(change["answers_changed"]))
        cli.console.print(table)
    if gguf:
        _export_gguf(cli, cfg, run_dir, gguf, sample)
    if to_dir or push_to_hub:  # branch ship: after the exports above, so the shared layout carries them
        from tunewise.export import hub

        if to_dir:
            cli.console.print(f"shared layout: {hub.describe(cli.guarded(lambda: hub.export_to_dir(cfg, run_dir.root, to_dir)))}")
        if push_to_hub:
            cli.console.print(f"pushed: {hub.describe(cli.guarded(lambda: hub.push_to_hub(cfg, run_dir.root, push_to_hub, private=private)))}")


def _export_gguf(cli: Any, cfg: Any, run_dir: Any, types: list[str], sample: int) -> None:
    """--gguf (branch ship): write, read back and check each type; a failed check exits 1 with nothing kept."""
    from rich.table import Table

    from tunewise.export.gguf import check_gguf_type
    from tunewise.export.gguf_run import GGUFVerificationError, export_gguf_run

    names = [cli.guarded(lambda t=t: check_gguf_type(t)) for item in types for t in item.split(",") if t.strip()]
    try:
        report = cli.guarded(lambda: export_gguf_run(cfg, run_dir.root, names, sample=sample))
    except GGUFVerificationError as exc:
        cli.fail(str(exc), code=1)
    table = Table(title=f"GGUF exports of {report['source']} (checked on {sample} held-out examples)")
    for column in ("type", "size", "template + stop", "max |logit diff|", "greedy identical", "file"):
        table.add_column(column, justify="left" if column in ("type", "file") else "right")
    for name, r in report["types"].items():
        t = r["template"]
        table.add_row(name, _mb(r["size_bytes"]), f"{t['renderings_compared']} identical", f"{r['max_abs_logit_diff']:.3g}",
                      f"{r['greedy_identical']}/{r['greedy_compared']}", r["output"])
    cli.console.print(table)


def bench_command(
    run: Path = typer.Argument(..., help="A trained run directory"),
    variants: Optional[str] = typer.Option(None, help="Comma-separated: base,tuned,merged,int8,bnb-8bit,bnb-4bit "
                                                      "(default: every one that exists)"),
    batch_sizes: str = typer.Option("1,2,4,8", help="Batch sizes for throughput"),
    new_tokens: int = typer.Option(32, help="Tokens generated per request"),
    prompts: int = typer.Option(8, help="Test prompts used"),
    rounds: int = typer.Option(2, help="Batches timed per batch size"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice)"),
) -> None:
    """Latency (TTFT, per token; p50/p95), throughput per batch size and memory of each variant (RUN/bench/)."""
    cli = _cli()
    from rich.table import Table

    from tunewise.export.bench import bench_run
    from tunewise.runs import config_of_run

    cfg, run_dir = cli.guarded(lambda: config_of_run(run))
    sizes = _ints(batch_sizes, "--batch-sizes")
    chosen = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
    report = cli.guarded(lambda: bench_run(cfg, run_dir.root, variants=chosen, batch_sizes=sizes, new_tokens=new_tokens,
                                           prompts=prompts, rounds=rounds, threads=threads))
    table = Table(title=f"inference on {report['device']}, {report['new_tokens']} new tokens")
    table.add_column("variant")
    for column in ("TTFT p50/p95 ms", "per token p50/p95 ms", *[f"tok/s @{b}" for b in sizes], "weights MiB", "peak MiB"):
        table.add_column(column, justify="right")
    for name, v in report["variants"].items():
        pt = v["per_token_ms"] or {"p50": float("nan"), "p95": float("nan")}
        table.add_row(name, f"{v['ttft_ms']['p50']:.1f} / {v['ttft_ms']['p95']:.1f}", f"{pt['p50']:.2f} / {pt['p95']:.2f}",
                      *[f"{t['tokens_per_s']:.1f}" for t in v["throughput"]], f"{v['weights_mb']:.1f}",
                      f"{v['peak_memory_mb']:.0f}")
    cli.console.print(table)
    for name, why in report["skipped"].items():
        cli.console.print(f"[dim]{name}: {why}[/]")
    cli.console.print(f"written: {run_dir.bench_report}")


def serve_command(
    targets: list[Path] = typer.Argument(..., help="Run directories (their tuned model) or model folders"),
    host: str = typer.Option("127.0.0.1", help="Loopback address to listen on"),
    port: int = typer.Option(8000, help="Port"),
    base: bool = typer.Option(True, "--base/--no-base", help="Also serve the base model of adapter runs as 'base'"),
    split: Optional[str] = typer.Option(None, help="A/B traffic split, e.g. base=1,myrun=1 (default: equal over all)"),
    ab_name: str = typer.Option("ab", help="Model name that routes through the split"),
    log_dir: Optional[Path] = typer.Option(None, help="Request logs (default: FIRST_TARGET/serve/logs)"),
    max_tokens: int = typer.Option(512, help="Most completion tokens a request may ask for"),
    default_max_tokens: int = typer.Option(128, help="Completion tokens when a request does not say"),
    seed: Optional[int] = typer.Option(None, help="Seed of the random split assignment"),
    max_body_mb: float = typer.Option(4.0, "--max-body-mb", help="Largest request body in MB; bigger ones get 413 at once"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="Also load adapters saved as pickles (adapter_model.bin): only if you trust them"),
    max_batch: int = typer.Option(8, "--max-batch", help="Most concurrent greedy requests generated as one batch (1 = no batching)"),
    batch_wait_ms: float = typer.Option(20.0, "--batch-wait-ms",
                                        help="How long a request waits for others to join its batch, in milliseconds"),
    bf16: bool = typer.Option(False, "--bf16", help="Serve in bf16: much faster batches on CPUs with bf16 units (AMX) "
                              "and on GPUs, but a greedy answer may then differ with the batch it ran in (fp32 default: "
                              "identical to one request at a time)"),
) -> None:
    """OpenAI-compatible server (/v1/models, /v1/chat/completions, /v1/completions) with A/B split and logs."""
    cli = _cli()
    from tunewise.serve.app import Server, create_app
    from tunewise.serve.server import check_loopback, serve_forever
    from tunewise.serve.split import TrafficSplit, parse_split
    from tunewise.serve.variants import load_variants

    cli.guarded(lambda: check_loopback(host))
    if not max_body_mb > 0:
        cli.fail(f"--max-body-mb must be above 0, got {max_body_mb}")
    if max_batch < 1 or batch_wait_ms < 0:
        cli.fail(f"--max-batch must be at least 1 and --batch-wait-ms at least 0, got {max_batch} and {batch_wait_ms}")
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    variants = cli.guarded(lambda: load_variants(targets, include_base=base, allow_pickle=allow_pickle, dtype=dtype))
    weights = cli.guarded(lambda: parse_split(split)) if split else {name: 1.0 for name in variants}
    traffic = cli.guarded(lambda: TrafficSplit(weights, name=ab_name, seed=seed)) if len(weights) > 1 else None
    logs = log_dir or targets[0] / "serve" / "logs"
    server = cli.guarded(lambda: Server(variants, logs, split=traffic, max_tokens=max_tokens,
                                        default_max_tokens=default_max_tokens,
                                        max_body_bytes=int(max_body_mb * 2**20), max_batch=max_batch,
                                        batch_wait_s=batch_wait_ms / 1000))
    cli.console.print(f"serving {', '.join(variants)} at http://{host}:{port}/v1; logs in {logs}")
    if traffic:
        shares = ", ".join(f"{k} {w:.0%}" for k, w in traffic.weights.items())
        cli.console.print(f"model '{ab_name}' splits traffic: {shares}")
    cli.guarded(lambda: serve_forever(create_app(server), host, port))


def abtest_command(
    log: Path = typer.Argument(..., help="The server's log folder (--log-dir of `tunewise serve`)"),
    metric: str = typer.Option("exact_match", help="Metric scoring responses against recorded references"),
    control: Optional[str] = typer.Option(None, help="Control variant (default: base, else the first)"),
    confidence: float = typer.Option(0.95, help="Confidence level of the intervals"),
) -> None:
    """Per-variant latency and quality with confidence intervals, each variant against the control."""
    cli = _cli()
    from rich.table import Table

    from tunewise.rundir import atomic_write_json
    from tunewise.serve.abtest import summarize

    report = cli.guarded(lambda: summarize(log, metric=metric, control=control, confidence=confidence))

    def ci(entry: dict[str, Any] | None, scale: float = 1.0, fmt: str = ".3f") -> str:
        if not entry or entry.get("mean") is None:
            return ""
        text = f"{entry['mean'] * scale:{fmt}}"
        return text + (f" [{entry['ci'][0] * scale:{fmt}}, {entry['ci'][1] * scale:{fmt}}]" if entry.get("ci") else "")

    pct = int(confidence * 100)
    table = Table(title=f"A/B test: {log} (control {report['control']}, {pct}% intervals)")
    for column in ("variant", "requests", "latency ms", "p95 ms", metric, "feedback", f"{metric} vs control"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, v in report["variants"].items():
        diff = report["versus_control"].get(name, {}).get(metric)
        versus = (f"{diff['delta']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}] p={diff['p_value']:.3f}"
                  if diff else "")
        p95 = v["latency_s"].get("p95")
        table.add_row(name, str(v["requests"]), ci(v["latency_s"], 1000, ".1f"),
                      f"{p95 * 1000:.1f}" if p95 is not None else "", ci(v[metric]), ci(v["feedback"]), versus)
    cli.console.print(table)
    out = (log if log.is_dir() else log.parent) / "abtest.json"
    atomic_write_json(out, report)
    cli.console.print(f"written: {out}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("bench")(bench_command)
    app.command("serve")(serve_command)
    app.command("abtest")(abtest_command)
