"""The playground: one prompt answered by a run's base model, its tuned model and its exports, streamed token by
token. Loading and generation are the server's (tunewise/serve/variants.py, tunewise/serve/engine.py): adapters share
one loaded base; the last few runs' models stay loaded."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from tunewise.rundir import RunDir


def export_targets(run_root: Path) -> list[Path]:
    """RUN/export/* folders that hold a model (merged, int8, ...)."""
    export = RunDir.of(run_root).export
    return sorted(p for p in export.iterdir() if (p / "config.json").is_file()) if export.is_dir() else []


class Playground:
    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._loaded: OrderedDict[str, tuple[dict[str, Any], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def variants(self, run_root: Path) -> tuple[dict[str, Any], Any]:
        """({variant name: Variant}, config) of a run: base, tuned (named after the run) and each export."""
        from tunewise.runs import config_of_run
        from tunewise.serve.variants import load_variants

        key = str(run_root.resolve())
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            config, _ = config_of_run(run_root)
            loaded = load_variants([run_root, *export_targets(run_root)], include_base=True), config
            self._loaded[key] = loaded
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return loaded

    def stream(self, run_root: Path, variant: str, prompt: str, max_tokens: int | None = None) -> Iterator[dict[str, Any]]:
        """Events for one variant's answer: {"delta": text} ..., then {"done": True, "finish_reason", "tokens",
        "ttft_s", "latency_s"}."""
        from tunewise.serve.engine import Generation, GenerationParams
        from tunewise.lm.chat import render_prompt

        variants, config = self.variants(run_root)
        if variant not in variants:
            raise ValueError(f"{run_root.name} has no model {variant!r}; it has {', '.join(variants)}")
        v = variants[variant]
        messages = ([{"role": "system", "content": config.data.system_prompt}] if config.data.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        ids = v.tokenizer(render_prompt(messages, v.tokenizer), add_special_tokens=False)["input_ids"]
        budget = max(1, min(max_tokens or config.eval.max_new_tokens, v.context_length - len(ids)))
        generation = Generation(v, ids, GenerationParams(max_tokens=budget))
        for delta in generation:
            yield {"delta": delta}
        yield {"done": True, "finish_reason": generation.finish_reason, "tokens": generation.completion_tokens,
               "ttft_s": generation.ttft_s, "latency_s": generation.latency_s}
