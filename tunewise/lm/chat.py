"""Render examples with the model's chat template and mark which tokens are trained.

Labels are built by *position* from character spans of the assistant turns, never by masking the pad id: on models
whose pad token is the eos token (SmolLM2), masking by pad id also masks the final ``<|im_end|>``, and the tuned
model never learns to stop. The end-of-turn token is supervised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

from tunewise.example import Example

IGNORE_INDEX = -100
LossOn = Literal["answers", "all", "last_turn"]

# Keys of a message that only tunewise reads; the chat template never sees them.
_PRIVATE_KEYS = ("weight",)


@dataclass
class Encoded:
    """One tokenized training example."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Rendered:
    """An example rendered to text, with the character spans whose tokens are trained."""

    text: str
    spans: list[tuple[int, int]]
    prompt_chars: int  # characters before the first trained span (the prompt), for statistics


def _template_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in _PRIVATE_KEYS} for m in messages]


def _render(tokenizer: Any, messages: Sequence[dict[str, Any]], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        _template_messages(messages), tokenize=False, add_generation_prompt=generation_prompt
    )


def eos_text(tokenizer: Any) -> str | None:
    """The text of the token that ends an assistant turn (what generation must stop at)."""
    return tokenizer.eos_token


def render_example(example: Example, tokenizer: Any, loss_on: LossOn = "answers") -> Rendered:
    """Render with the chat template and find the trained character spans.

    Each trained assistant turn's span runs from the end of the generation prompt before it through the first eos
    token after its content, so the model learns to stop. Turns with ``weight: 0`` are not trained.
    Plain-text examples (a single ``text`` message) are trained on every token, with eos appended.
    """
    messages = example.messages
    if len(messages) == 1 and messages[0].get("role") == "text":
        text = str(messages[0]["content"]) + (tokenizer.eos_token or "")
        return Rendered(text=text, spans=[(0, len(text))], prompt_chars=0)

    full = _render(tokenizer, messages, generation_prompt=False)
    if loss_on == "all":
        return Rendered(text=full, spans=[(0, len(full))], prompt_chars=0)

    assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if loss_on == "last_turn":
        assistant = assistant[-1:]
    eos = eos_text(tokenizer)
    spans: list[tuple[int, int]] = []
    search_from = 0
    for i in assistant:
        if messages[i].get("weight", 1) in (0, False):
            continue
        content = str(messages[i].get("content") or "")
        prefix = _render(tokenizer, messages[:i], generation_prompt=True)
        if full.startswith(prefix):
            start = len(prefix)
        else:  # a template that rewrites earlier turns (e.g. drops reasoning): find the content itself
            start = full.find(content, search_from) if content else -1
            if start < 0:
                continue
        end = start + len(content)
        if full[start:end] != content:  # template altered the content (e.g. stripped it): take what is there
            located = full.find(content.strip(), start) if content.strip() else start
            end = (located + len(content.strip())) if located >= 0 else end
        stop = full.find(eos, end) if eos else -1
        # supervise the end-of-turn token when it follows the answer (only whitespace between)
        if stop >= 0 and not full[end:stop].strip():
            end = stop + len(eos)
        spans.append((start, end))
        search_from = end
    prompt_chars = spans[0][0] if spans else len(full)
    return Rendered(text=full, spans=spans, prompt_chars=prompt_chars)


def _labels_from_offsets(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE_INDEX] * len(ids)
    if not spans:
        return labels
    k = 0
    for j, (s, e) in enumerate(offsets):
        while k < len(spans) and spans[k][1] <= s:
            k += 1
        if k == len(spans):
            break
        a, b = spans[k]
        if e > a and s < b and e > s:
            labels[j] = ids[j]
    return labels


def encode_examples(
    examples: Iterable[Example],
    tokenizer: Any,
    *,
    loss_on: LossOn = "answers",
    max_tokens: int | None = None,
) -> list[Encoded]:
    """Tokenize examples in one batched tokenizer call; sequences longer than ``max_tokens`` are cut on the right
    and marked ``truncated`` (the caller decides whether to keep them: see ``n_trained``)."""
    examples = list(examples)
    rendered = [render_example(ex, tokenizer, loss_on) for ex in examples]
    if not rendered:
        return []
    batch = tokenizer(
        [r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
    )
    out = []
    for ex, r, ids, offsets in zip(examples, rendered, batch["input_ids"], batch["offset_mapping"]):
        labels = _labels_from_offsets(ids, offsets, r.spans)
        truncated = max_tokens is not None and len(ids) > max_tokens
        if truncated:
            ids, labels = ids[:max_tokens], labels[:max_tokens]
        out.append(Encoded(input_ids=list(ids), labels=labels, truncated=truncated, meta=ex.meta))
    return out


def truncate_prompt(
    example: Example, tokenizer: Any, max_tokens: int, *, loss_on: LossOn = "answers", encoded: Encoded | None = None
) -> tuple[Example, Encoded] | None:
    """``example`` with the end of its last user message cut so that the rendered example fits ``max_tokens``
    (the system prompt, the template and every answer kept), and its encoding; None when even an empty user message
    would not fit. A plain-text example has no prompt: its text is cut at the end. ``encoded`` is the example's
    encoding when the caller has it.

    The cut is found on the message's own tokens and checked by rendering again (a token boundary inside the
    template can merge differently), cutting a few tokens more until it fits."""
    messages = example.messages
    is_text = len(messages) == 1 and messages[0].get("role") == "text"
    last = example.last_assistant_index
    target = 0 if is_text else next((i for i in range(last or 0, -1, -1) if messages[i].get("role") == "user"), None)
    if target is None:
        return None
    enc = encoded if encoded is not None else encode_example(example, tokenizer, loss_on=loss_on)
    content = str(messages[target].get("content") or "")
    pieces = tokenizer(content, add_special_tokens=False, return_offsets_mapping=True)
    offsets = pieces["offset_mapping"]
    keep = len(offsets)
    over = len(enc) - max_tokens
    if over <= 0:
        return example, enc
    for _ in range(8):
        keep -= over
        if keep <= 0:
            return None
        cut = content[: offsets[keep - 1][1]].rstrip()
        new_messages = [dict(m) for m in messages]
        new_messages[target]["content"] = cut
        candidate = Example(messages=new_messages, meta={**example.meta, "truncated": True})
        enc = encode_example(candidate, tokenizer, loss_on=loss_on)
        over = len(enc) - max_tokens
        if over <= 0:
            if not is_text and enc.n_trained == 0:
                return None
            return candidate, enc
    return None


def encode_example(example: Example, tokenizer: Any, **kwargs: Any) -> Encoded:
    """:func:`encode_examples` for one example."""
    return encode_examples([example], tokenizer, **kwargs)[0]


def render_prompt(messages: Sequence[dict[str, Any]], tokenizer: Any) -> str:
    """The generation prompt for ``messages``: the same template as training, ending with the assistant header."""
    return _render(tokenizer, messages, generation_prompt=True)
