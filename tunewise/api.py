"""The Python API: one function per command, thin wrappers over the library functions the CLI calls.

    import tunewise
    result = tunewise.run("examples/quickstart.yaml", overrides=["training.max_steps=20"])
    model = tunewise.load(result["run_dir"])
    print(model.generate("Which topic is this message from? ..."))

``config`` arguments take a YAML path, a dict (the YAML's contents) or a :class:`tunewise.config.Config`; ``run``
arguments take a run directory (or a config file, whose run directory is then used). Every function returns what the
matching command prints, as a dict, and writes the run directory exactly as the command does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tunewise.config import Config


def _config(config: str | Path | dict[str, Any] | Config, overrides: Sequence[str] | None = None) -> Config:
    from tunewise.config import config_from_dict, load_config

    if isinstance(config, Config):
        return config_from_dict(config.model_dump(), list(overrides or [])) if overrides else config
    if isinstance(config, dict):
        return config_from_dict(config, list(overrides or []))
    return load_config(config, list(overrides or []))


def _run(run: str | Path | dict[str, Any] | Config) -> tuple[Config, Any]:
    from tunewise.runs import config_of_run, init_run

    if isinstance(run, (dict, Config)):
        config = _config(run)
        return config, init_run(config)
    return config_of_run(run)


def run(config: str | Path | dict[str, Any] | Config, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """``tunewise run``: every stage (prepare, baseline eval, train, eval, compare, report). Returns the run's
    headline numbers with ``run_dir`` and ``report``."""
    from tunewise.pipeline import run_all
    from tunewise.train.preflight import check_paths

    cfg = _config(config, overrides)
    check_paths(cfg)
    return run_all(cfg)


def prepare(config: str | Path | dict[str, Any] | Config, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """``tunewise data prepare``: validate, clean, split into RUN/data; returns the data report."""
    from tunewise.pipeline import init_run, prepare_stage

    cfg = _config(config, overrides)
    return {"run_dir": str(cfg.run_dir), **prepare_stage(cfg, init_run(cfg))}


def train(run: str | Path | dict[str, Any] | Config, *, resume: bool = False) -> dict[str, Any]:
    """``tunewise train``: train on RUN/data, save RUN/model; returns the training summary."""
    from tunewise.runlock import writing_run
    from tunewise.train.run import train_run

    cfg, run_dir = _run(run)
    from tunewise.decide.estimate import checkpointing_choice

    with writing_run(run_dir.root, "train"):
        return train_run(cfg, run_dir.root, resume=resume, checkpointing=checkpointing_choice(cfg, run_dir.root))


def evaluate(run: str | Path, model: str = "tuned", *, split: str = "test") -> dict[str, Any]:
    """``tunewise eval RUN --model tuned|base``: predictions and metrics in RUN/eval; returns the metrics record."""
    from tunewise.evaluate.run import evaluate_run
    from tunewise.runlock import writing_run

    cfg, run_dir = _run(run)
    with writing_run(run_dir.root, "eval"):
        return evaluate_run(cfg, run_dir.root, model, split=split)


def compare(run: str | Path) -> dict[str, Any]:
    """``tunewise compare RUN``: base vs tuned with confidence intervals (RUN/eval/comparison.json)."""
    from tunewise.pipeline import compare_stage

    cfg, run_dir = _run(run)
    return compare_stage(cfg, run_dir)


def export(run: str | Path, *, merge: bool = False, quantize: Sequence[str] = (), gguf: Sequence[str] = (),
           to_dir: str | Path | None = None, push_to_hub: str | None = None, sample: int = 16) -> dict[str, Any]:
    """``tunewise export``: merge, quantize, GGUF (+ Modelfile), each verified; then the shareable layout to a folder
    and/or a hub repository. Returns one report per step that ran."""
    cfg, run_dir = _run(run)
    out: dict[str, Any] = {}
    if merge:
        from tunewise.export.merge import merge_run

        out["merge"] = merge_run(cfg, run_dir.root, sample=sample)
    if quantize:
        from tunewise.export.quantize import quantize_run

        out["quantize"] = quantize_run(cfg, run_dir.root, list(quantize))
    if gguf:
        from tunewise.export.gguf_run import export_gguf_run

        out["gguf"] = export_gguf_run(cfg, run_dir.root, list(gguf), sample=sample)
    if to_dir is not None:
        from tunewise.export.hub import export_to_dir

        out["to_dir"] = export_to_dir(cfg, run_dir.root, to_dir)
    if push_to_hub is not None:
        from tunewise.export.hub import push_to_hub as push

        out["push_to_hub"] = push(cfg, run_dir.root, push_to_hub)
    if not out:
        raise ValueError("say what to export: merge=True, quantize=[...], gguf=[...], to_dir=... or push_to_hub=...")
    return out


@dataclass
class LoadedModel:
    """A model ready to use: ``model`` and ``tokenizer`` (transformers objects), the run's ``system_prompt``, and
    :meth:`generate` that prompts it the way it was trained (chat template, stop token)."""

    model: Any
    tokenizer: Any
    system_prompt: str | None = None
    name: str = ""

    def generate(self, prompt: str | list[dict[str, Any]], *, max_new_tokens: int = 256) -> str:
        """The greedy answer to a user message (or to a list of chat messages)."""
        from tunewise.lm.generate import generate

        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.system_prompt and (not messages or messages[0].get("role") != "system"):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return generate(self.model, self.tokenizer, [messages], max_new_tokens=max_new_tokens)[0]["text"].strip()


def load(target: str | Path) -> LoadedModel:
    """A run directory (its tuned model), adapter folder, model or export folder, or GGUF file, ready to generate."""
    from tunewise.chat import load_chat_target

    chat = load_chat_target(target)
    return LoadedModel(chat.model, chat.tokenizer, chat.system_prompt, chat.name)
