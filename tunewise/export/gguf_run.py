"""``tunewise export RUN --gguf TYPE``: the merged (or full fine-tuned) model as GGUF + an Ollama Modelfile, verified.

Each type lands in RUN/export/gguf-<type>/ (``model-<type>.gguf``, ``Modelfile``) and RUN/export/gguf-<type>.json.
Before the folder is kept, the file is read back by an independent reader (transformers' GGUF loader, ``gguf_file=``)
and checked:

- **chat template and stop token**: the template stored in the file, applied by the tokenizer transformers builds
  from the file, renders held-out conversations byte-for-byte as training rendered them (tunewise/lm/chat.py),
  with and without the generation prompt; the file's tokenizer turns those renderings into the same token ids; its
  eos/end-of-turn id is the token training supervised at the end of every answer; the Modelfile's TEMPLATE (read back
  from the written Modelfile), SYSTEM and stop parameters render the same conversations byte-for-byte too.
- **weights**: the model transformers loads from the file gives the logits of the merged model with each tensor
  rounded to its stored type (max |difference| <= 1e-3): names, Q/K permutation, shapes and hyper-parameters right.
- **quality**, measured against the merged model: max |logit difference| and greedy answers on held-out prompts
  (an f32 file must reproduce them; a quantized one is reported, as `--quantize` does).

Any failed check raises :class:`GGUFVerificationError`: nothing is left in RUN/export/gguf-<type>.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch

from tunewise.config import Config
from tunewise.example import Example
from tunewise.export.common import MERGED, export_root, sample_examples
from tunewise.export.gguf import check_gguf_type, read_metadata, round_trip, write_gguf
from tunewise.export.merge import compare_models, measure
from tunewise.export.modelfile import (TemplateNotPortable, check_segments, derive_segments, modelfile_text,
                                       parse_modelfile, segments_from_go_template)
from tunewise.rundir import RunDir, atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

LAYOUT_ATOL = 1e-3  # float32 logits of the same weights through two loaders agree to ~1e-5


class GGUFVerificationError(RuntimeError):
    """The GGUF file does not reproduce what training did; its folder was not kept."""


def gguf_folder(run: RunDir, file_type: str) -> Path:
    return export_root(run) / f"gguf-{file_type}"


def source_model(config: Config, run: RunDir, *, sample: int = 16) -> Path:
    """The full-weight model the GGUF is written from: RUN/model for a full fine-tune, RUN/export/merged for an
    adapter (merged and verified first when it is not there yet)."""
    model_dir = run.require("model", hint="train first: `tunewise train RUN`")
    if (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        return model_dir
    merged = export_root(run) / MERGED
    if not (merged / "config.json").is_file():
        from tunewise.export.merge import merge_run

        log.info("merging the adapter first (RUN/export/merged)")
        merge_run(config, run.root, sample=sample)
    return merged


def check_conversations(examples: list[Example], system_prompt: str | None) -> list[list[dict[str, Any]]]:
    """Conversations the template checks run on: the held-out examples, a multi-turn one, and one without a system
    message (where a template's or the run's default system prompt comes in)."""
    conversations = [[{"role": m["role"], "content": m.get("content")} for m in e.messages] for e in examples]
    turns = [{"role": "user", "content": "Hello, who are you?"}, {"role": "assistant", "content": "An assistant."},
             {"role": "user", "content": "Say it again:\n  with   spaces & <tags> \"quotes\" and ünïcödé"},
             {"role": "assistant", "content": "An assistant, again."}]
    conversations.append(turns)
    conversations.append([{"role": "system", "content": system_prompt or "Answer briefly."}, *turns])
    return conversations


def _first_difference(a: str, b: str) -> str:
    at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at character {at}: {a[at:at + 40]!r} vs {b[at:at + 40]!r}"


def check_template(tokenizer: Any, gguf_tokenizer: Any, metadata: dict[str, Any], modelfile: str,
                   conversations: list[list[dict[str, Any]]], stop_id: int, system_prompt: str | None) -> dict[str, Any]:
    """The template/stop-token checks (see the module docstring); returns counts and a list of problems."""
    from tunewise.lm.chat import render_example

    problems: list[str] = []
    if metadata.get("tokenizer.chat_template") != tokenizer.chat_template:
        problems.append("the chat template stored in the file differs from the run's tokenizer's")
    if metadata.get("tokenizer.ggml.eos_token_id") != stop_id or gguf_tokenizer.eos_token_id != stop_id:
        problems.append(f"the file's eos token id is {metadata.get('tokenizer.ggml.eos_token_id')} (transformers reads "
                        f"{gguf_tokenizer.eos_token_id}); training ends answers with {stop_id}")
    written = parse_modelfile(modelfile)
    stop_text = tokenizer.convert_ids_to_tokens(stop_id)
    if written["stop"] != [stop_text]:
        problems.append(f"the Modelfile stops at {written['stop']}, training ends answers with {stop_text!r}")
    ollama = segments_from_go_template(written["template"])
    rendered = 0
    for i, messages in enumerate(conversations):
        example = Example(messages=messages)
        trained = render_example(example, tokenizer)
        last = trained.spans[-1] if trained.spans else None
        if last is None or not trained.text[: last[1]].endswith(stop_text):
            problems.append(f"conversation {i}: training's last trained span does not end with {stop_text!r}")
        prompt = example.prompt_messages
        for generation, msgs, text in ((False, messages, trained.text),
                                       (True, prompt, tokenizer.apply_chat_template(prompt, tokenize=False,
                                                                                    add_generation_prompt=True))):
            theirs = gguf_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation)
            if theirs != text:
                problems.append(f"conversation {i}: the file's template renders differently {_first_difference(theirs, text)}")
            for special in (False, True):
                if gguf_tokenizer(text, add_special_tokens=special)["input_ids"] != \
                        tokenizer(text, add_special_tokens=special)["input_ids"]:
                    problems.append(f"conversation {i}: the file's tokenizer splits the rendered text differently")
            # Ollama adds the Modelfile's SYSTEM to a conversation without a system message
            own = msgs[1:] if msgs and msgs[0]["role"] == "system" and msgs[0]["content"] == written["system"] else msgs
            by_ollama = ollama.render(own, add_generation_prompt=generation, system=written["system"])
            if by_ollama != text:
                problems.append(f"conversation {i}: the Modelfile's TEMPLATE renders differently "
                                f"{_first_difference(by_ollama, text)}")
            rendered += 1
    return {"conversations": len(conversations), "renderings_compared": rendered, "problems": problems[:20],
            "stop_token": stop_text, "stop_token_id": stop_id, "system_prompt": written["system"]}


def _expected_model(model: Any, result: dict[str, Any]) -> Any:
    """``model`` with every tensor rounded to the type the file stores it in (what a correct reader must give)."""
    expected = copy.deepcopy(model)
    params = dict(expected.named_parameters())
    with torch.no_grad():
        for target, source in result["sources"].items():
            param = params[source]
            param.copy_(torch.from_numpy(round_trip(param.detach().float().numpy(), result["tensor_types"][target])))
    return expected


def export_gguf_run(config: Config, run_dir: str | Path, file_types: list[str], *, sample: int = 16,
                    atol: float = 1e-3) -> dict[str, Any]:
    """Write and verify one GGUF export per type in ``file_types``; returns {"types": {type: report}}.

    ``atol`` bounds the max |logit difference| of an f32 file from the merged model (other types are measured)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.lm.generate import stop_token_ids
    from tunewise.lm.loading import load_model, load_tokenizer

    logging.getLogger("gguf").setLevel(logging.WARNING)  # the writer logs every file it writes at INFO
    run = RunDir.of(run_dir)
    types = [check_gguf_type(t) for t in file_types]
    examples = sample_examples(run, sample)
    source = source_model(config, run, sample=sample)
    tokenizer = load_tokenizer(str(source), trust_remote_code=config.trust_remote_code)
    model = load_model(str(source), dtype=torch.float32).eval()
    stop_id = tokenizer.eos_token_id
    if stop_id is None or stop_id not in stop_token_ids(tokenizer, model):
        raise ValueError(f"{source}: the tokenizer has no eos token among the model's stop tokens; fix "
                         "generation_config.json's eos_token_id")
    system_prompt = getattr(config.data, "system_prompt", None)
    conversations = check_conversations(examples, system_prompt)
    try:
        segments = derive_segments(tokenizer)
        problems = check_segments(segments, tokenizer, conversations)
    except TemplateNotPortable as exc:
        problems = [str(exc)]
    if problems:
        raise GGUFVerificationError("the chat template can't be written as an Ollama TEMPLATE that renders like "
                                    f"training: {problems[0]}; nothing was exported")
    max_new, batch = config.eval.max_new_tokens, config.eval.batch_size
    reference = measure(model, tokenizer, examples, max_new, batch)
    reports: dict[str, Any] = {}
    for file_type in types:
        started = time.time()
        target = gguf_folder(run, file_type)
        name = f"model-{file_type}.gguf"
        report: dict[str, Any] = {"type": file_type, "source": str(source), "output": str(target / name),
                                  "sample": len(examples)}
        with atomic_dir(target) as tmp:
            written = write_gguf(source, tmp / name, file_type, tokenizer=tokenizer, name=config.name,
                                 stop_token_id=stop_id, metadata=_general_metadata(config))
            modelfile = modelfile_text(name, segments, [tokenizer.convert_ids_to_tokens(stop_id)],
                                       system=system_prompt, title=f"{config.name} ({file_type}) exported by tunewise")
            (tmp / "Modelfile").write_text(modelfile, encoding="utf-8")
            metadata = read_metadata(tmp / name)
            gguf_tokenizer = AutoTokenizer.from_pretrained(str(tmp), gguf_file=name)
            gguf_tokenizer.padding_side = "left"
            template = check_template(tokenizer, gguf_tokenizer, metadata, modelfile, conversations, stop_id,
                                      system_prompt)
            loaded = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=name, dtype=torch.float32).eval()
            expected = _expected_model(model, written)
            layout = compare_models(measure(expected, tokenizer, examples, max_new, batch),
                                    measure(loaded, gguf_tokenizer, examples, max_new, batch), examples)
            del expected
            quality = compare_models(reference, measure(loaded, gguf_tokenizer, examples, max_new, batch), examples)
            del loaded
            report.update({
                "size_bytes": (tmp / name).stat().st_size,
                "tensor_types": _count(written["tensor_types"]),
                "pre_tokenizer": written["pre_tokenizer"],
                "template": template,
                "layout_max_abs_logit_diff": layout["max_abs_logit_diff"],
                "max_abs_logit_diff": quality["max_abs_logit_diff"],
                "mean_max_abs_logit_diff": quality["mean_max_abs_logit_diff"],
                "greedy_identical": quality["greedy_identical"],
                "greedy_compared": quality["greedy_compared"],
                "mismatches": [{"index": m["index"], "input": m["input"], "merged": m["adapter"], "gguf": m["merged"]}
                               for m in quality["mismatches"]],
                "seconds": round(time.time() - started, 2),
            })
            failures = list(template["problems"])
            if layout["max_abs_logit_diff"] > LAYOUT_ATOL:
                failures.append(f"the model read back from the file differs from the merged model rounded to "
                                f"{file_type} by {layout['max_abs_logit_diff']:.3g} in the logits (allowed {LAYOUT_ATOL:g})")
            if file_type == "f32" and (quality["max_abs_logit_diff"] > atol or quality["greedy_identical"] != len(examples)):
                failures.append(f"the f32 file does not reproduce the merged model: max |logit diff| "
                                f"{quality['max_abs_logit_diff']:.3g}, greedy identical {quality['greedy_identical']}/"
                                f"{len(examples)}")
            report["verified"] = not failures
            report["failures"] = failures
            if failures:
                atomic_write_json(export_root(run) / f"gguf-{file_type}.json", report)
                raise GGUFVerificationError(f"the {file_type} GGUF export failed its check: {failures[0]}"
                                            + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
                                            + f"; nothing was saved. Details in {export_root(run) / f'gguf-{file_type}.json'}")
        atomic_write_json(export_root(run) / f"gguf-{file_type}.json", report)
        reports[file_type] = report
    return {"source": str(source), "types": reports}


def _count(types: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in types.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _general_metadata(config: Config) -> dict[str, str]:
    """general.* strings: where the base came from and its licence, where known (tunewise/model_card.py)."""
    from tunewise.model_card import base_reference

    ref = base_reference(config.model)
    out = {"general.source.url": f"https://huggingface.co/{ref['hub_id']}" if ref["hub_id"] else None,
           "general.license": ref["licence"]}
    return {k: v for k, v in out.items() if v is not None}
