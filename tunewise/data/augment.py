"""Training-set augmentation with real methods only: list answers with their items reordered, and instructions
paraphrased by a causal LM. Augmented examples are marked ``meta.augmented`` (the method) and never reach val/test."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from tunewise.config import DataConfig
from tunewise.example import Example

_ITEM = re.compile(r"^(\s*)([-*\u2022]|\d+[.)])\s+(.*\S)\s*$")


# --------------------------------------------------------------------------------------------------------------------
# list answers


def list_items(text: str) -> tuple[list[str], str] | None:
    """The items of an answer that is a list -- a JSON array of scalars, or lines that are all bullet or numbered
    items -- and its kind (``json``, ``bullet``, ``numbered``); None when the answer is not a list of 2+ items."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, list) and len(value) >= 2 and all(not isinstance(v, (list, dict)) for v in value):
            return [json.dumps(v, ensure_ascii=False) for v in value], "json"
    lines = [ln for ln in stripped.splitlines() if ln.strip()]
    matches = [_ITEM.match(ln) for ln in lines]
    if len(lines) < 2 or not all(matches):
        return None
    markers = [m.group(2) for m in matches if m]
    numbered = all(mk[0].isdigit() for mk in markers)
    if not numbered and len(set(markers)) != 1:
        return None
    items = [m.group(3) for m in matches if m]
    return (items, "numbered") if numbered else ([f"{markers[0]} {it}" for it in items], "bullet")


def _join(items: list[str], kind: str, original: str) -> str:
    if kind == "json":
        return "[" + ", ".join(items) + "]"
    if kind == "numbered":
        sep = ")" if re.search(r"^\s*\d+\)", original, re.M) else "."
        return "\n".join(f"{i}{sep} {it}" for i, it in enumerate(items, 1))
    return "\n".join(items)


def shuffled_answers(text: str, n: int, rng: random.Random) -> list[str]:
    """Up to ``n`` distinct reorderings of a list answer (none differ from the original when it is not a list)."""
    found = list_items(text)
    if not found:
        return []
    items, kind = found
    seen = {tuple(items)}
    out = []
    for _ in range(n * 10):
        if len(out) == n:
            break
        order = items[:]
        rng.shuffle(order)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            out.append(_join(order, kind, text))
    return out


def shuffle_augment(example: Example, n: int, rng: random.Random) -> list[Example]:
    """Copies of ``example`` whose last answer (a list) has its items reordered."""
    last = example.last_assistant_index
    if last is None:
        return []
    out = []
    for answer in shuffled_answers(str(example.messages[last].get("content") or ""), n, rng):
        messages = [dict(m) for m in example.messages]
        messages[last]["content"] = answer
        out.append(Example(messages, _augmented_meta(example, "shuffle")))
    return out


def _augmented_meta(example: Example, method: str) -> dict[str, Any]:
    meta = {k: v for k, v in example.meta.items() if k != "truncated"}
    meta["augmented"] = method
    meta["augmented_from"] = {"source": example.meta.get("source"), "line": example.meta.get("line")}
    return meta


# --------------------------------------------------------------------------------------------------------------------
# paraphrase


PARAPHRASE_PROMPT = (
    "Rewrite the following instruction in other words, keeping its meaning and every detail. "
    "Reply with the rewritten instruction only.\n\n{text}"
)


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def accept_paraphrase(source: str, candidate: str) -> bool:
    """A generation is kept only when it is non-empty and differs from the source (beyond case and spacing)."""
    return bool(candidate.strip()) and _norm(candidate) != _norm(source)


@dataclass
class Paraphraser:
    """Paraphrases text with a loaded causal LM and its tokenizer (left padding; greedy unless ``do_sample``)."""

    model: Any
    tokenizer: Any
    max_new_tokens: int = 128
    do_sample: bool = True
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 8
    prompt: str = PARAPHRASE_PROMPT
    seed: int = 0

    def generate(self, texts: Sequence[str], n: int = 1) -> list[list[str]]:
        """``n`` generations for each text (unchecked)."""
        import torch

        from tunewise.lm.chat import render_prompt

        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        torch.manual_seed(self.seed)
        out: list[list[str]] = []
        try:
            for i in range(0, len(texts), self.batch_size):
                chunk = texts[i : i + self.batch_size]
                prompts = [render_prompt([{"role": "user", "content": self.prompt.format(text=t)}], tok) for t in chunk]
                enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(self.model.device) for k, v in enc.items()}
                sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p} if self.do_sample else {"do_sample": False}
                with torch.no_grad():
                    gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, num_return_sequences=n,
                                              pad_token_id=pad_id, eos_token_id=tok.eos_token_id, **sampling)  # fmt: skip
                new = gen[:, enc["input_ids"].shape[1] :]
                decoded = tok.batch_decode(new, skip_special_tokens=True)
                out.extend([d.strip() for d in decoded[j * n : (j + 1) * n]] for j in range(len(chunk)))
        finally:
            tok.padding_side = old_side
        return out

    def paraphrase(self, texts: Sequence[str], n: int = 1) -> list[list[str]]:
        """Checked paraphrases: non-empty, different from the source and from each other (may be fewer than n)."""
        result = []
        for source, cands in zip(texts, self.generate(texts, n)):
            kept: list[str] = []
            for c in cands:
                if accept_paraphrase(source, c) and _norm(c) not in {_norm(k) for k in kept}:
                    kept.append(c)
            result.append(kept)
        return result


def paraphrase_augment(examples: Sequence[Example], paraphraser: Paraphraser, n: int) -> tuple[list[Example], int]:
    """Copies of each example with its last user turn (the instruction) paraphrased; returns them and the number of
    generations that were rejected by the checks."""
    targets = []
    for ex in examples:
        last = ex.last_assistant_index
        users = [i for i in range(last or 0) if ex.messages[i].get("role") == "user"]
        if users:
            targets.append((ex, users[-1]))
    if not targets:
        return [], 0
    texts = [str(ex.messages[i]["content"]) for ex, i in targets]
    results = paraphraser.paraphrase(texts, n)
    out = []
    for (ex, i), kept in zip(targets, results):
        for text in kept:
            messages = [dict(m) for m in ex.messages]
            messages[i]["content"] = text
            out.append(Example(messages, _augmented_meta(ex, "paraphrase")))
    return out, len(targets) * n - len(out)


def augment_examples(examples: Sequence[Example], config: DataConfig, *, paraphraser: Paraphraser | None = None) -> tuple[list[Example], int]:
    """Every augmented example the config asks for (shuffle first, then paraphrase), and how many were rejected."""
    rng = random.Random(config.seed)
    out: list[Example] = []
    rejected = 0
    if config.augment_shuffle:
        for ex in examples:
            out.extend(shuffle_augment(ex, config.augment_shuffle, rng))
    if config.augment_paraphrase:
        if paraphraser is None:
            raise ValueError("paraphrase augmentation needs a Paraphraser")
        made, rejected = paraphrase_augment(examples, paraphraser, config.augment_paraphrase)
        out.extend(made)
    return out, rejected
