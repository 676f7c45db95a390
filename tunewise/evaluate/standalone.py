"""Evaluate any model on any test file, outside a run: a Hugging Face causal LM folder (or hub id / built-in name),
an adapter folder (its base from ``base_model_name_or_path``) or a run directory (its RUN/model)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tunewise.data.example import Example
from tunewise.evaluate.run import evaluate_examples, write_eval
from tunewise.models import load_model, load_tokenizer
from tunewise.models.device import resolve_precision

DEFAULT_METRICS = ("exact_match", "accuracy", "token_f1")


@dataclass(frozen=True)
class ModelSource:
    """What to load: ``path`` (weights), ``base`` (an adapter's base model, else None), ``name`` (for file names)."""

    path: str
    base: str | None
    name: str
    run_dir: Path | None = None


def resolve_source(model: str | Path) -> ModelSource:
    """Classify ``model``: run directory, adapter folder, full model folder, or a hub id / built-in name."""
    path = Path(model).expanduser()
    if (path / "config.yaml").is_file():  # a run directory
        from tunewise.pipeline import config_of_run

        config, run = config_of_run(path)
        if not run.model.is_dir():
            raise FileNotFoundError(f"{path} is a run directory without a trained model ({run.model}); train it first: `tunewise train {path}`")
        inner = resolve_source(run.model)
        base = config.model if inner.base is not None else None
        return ModelSource(str(run.model), base, path.name, run.root)
    if (path / "adapter_config.json").is_file():
        adapter = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        from tunewise.export.model_card import local_base  # branch ship: the local copy a tunewise run trained on

        base = local_base(path) or adapter.get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{path / 'adapter_config.json'} names no base_model_name_or_path; set it to the base model's folder or hub id")
        return ModelSource(str(path), base, path.name)
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a model folder (no config.json), an adapter folder (no adapter_config.json) or a run "
            "directory (no config.yaml)"
        )
    return ModelSource(str(path) if path.is_dir() else str(model), None, path.name or str(model).replace("/", "_"))


def load_source(source: ModelSource, *, device: str, dtype: Any, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) for ``source``; an adapter is applied to its base model."""
    if source.path.endswith(".gguf") and Path(source.path).is_file():  # branch ship: a GGUF export
        from tunewise.export.gguf import load_gguf

        return load_gguf(source.path)
    tokenizer_from = source.path
    if source.base is not None and not (Path(source.path) / "tokenizer_config.json").is_file():
        tokenizer_from = source.base
    tokenizer = load_tokenizer(tokenizer_from, trust_remote_code=trust_remote_code)
    if source.base is None:
        return load_model(source.path, dtype=dtype, device=device, trust_remote_code=trust_remote_code), tokenizer
    from peft import PeftModel

    try:
        base = load_model(source.base, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    except (OSError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"cannot load the adapter's base model {source.base!r} ({err}); fix base_model_name_or_path in "
            f"{Path(source.path) / 'adapter_config.json'}"
        ) from err
    return PeftModel.from_pretrained(base, source.path).to(device), tokenizer


def read_examples(data: str | Path, max_examples: int | None = None) -> list[Example]:
    """Test examples with an assistant answer from any format tunewise reads (chat, alpaca, sharegpt, completion)."""
    from tunewise.data.formats import detect_format, normalize
    from tunewise.data.io import iter_rows

    examples = []
    for row in iter_rows(data):
        if row.error is not None:
            raise ValueError(f"{row.source}:{row.line}: {row.error}; fix the row or check it with `tunewise data validate`")
        fmt = detect_format(row.record)
        if fmt is None:
            raise ValueError(f"{row.source}:{row.line}: unknown row format (expected messages, instruction/output, conversations or prompt/completion)")
        example = normalize(row.record, fmt)
        if example.reference is not None:
            examples.append(example)
        if max_examples and len(examples) >= max_examples:
            break
    if not examples:
        raise ValueError(f"{data} has no example with an answer to evaluate against")
    return examples


def evaluate_model(
    model: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    *,
    metrics: Sequence[str] | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    name: str | None = None,
    trust_remote_code: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` and write OUT/predictions_<name>.jsonl, metrics_<name>.json, errors_<name>.json.

    For a run directory, ``data`` defaults to RUN/data/test.jsonl, ``out`` to RUN/eval and the eval settings to its
    config's; otherwise ``out`` defaults to ./eval and ``name`` to the model folder's name.
    """
    source = resolve_source(model)
    eval_cfg = None
    if source.run_dir is not None:
        from tunewise.pipeline import config_of_run

        config, _ = config_of_run(source.run_dir)
        eval_cfg, trust_remote_code = config.eval, trust_remote_code or config.trust_remote_code
        data = data or source.run_dir / "data" / "test.jsonl"
        out = out or source.run_dir / "eval"
    if data is None:
        raise ValueError("pass the test file with --data (only a run directory has a default, RUN/data/test.jsonl)")
    out_dir = Path(out or "eval")
    name = name or ("tuned" if source.run_dir is not None and out_dir == source.run_dir / "eval" else source.name)
    metrics = list(metrics or (eval_cfg.metrics if eval_cfg else DEFAULT_METRICS))
    max_examples = max_examples or (eval_cfg.max_examples if eval_cfg else None)
    examples = read_examples(data, max_examples)

    precision = resolve_precision()
    loaded, tokenizer = load_source(source, device=precision.device, dtype=precision.dtype, trust_remote_code=trust_remote_code)
    records, scored = evaluate_examples(
        loaded, tokenizer, examples, metrics,
        max_new_tokens=max_new_tokens or (eval_cfg.max_new_tokens if eval_cfg else 64),
        batch_size=batch_size or (eval_cfg.batch_size if eval_cfg else 16),
        progress=progress,
    )
    result = {"model": name, "model_path": source.path, "base_model": source.base, "data": str(data), **scored}
    in_run = source.run_dir is not None and out_dir == source.run_dir / "eval"
    plots_dir = source.run_dir / "plots" if in_run and source.run_dir is not None else out_dir / "plots"
    write_eval(out_dir, plots_dir, name, records, result, tokenizer=tokenizer)
    result["out_dir"] = str(out_dir)
    return result
