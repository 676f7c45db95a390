"""Show examples exactly as the model sees them (rendered template, trained tokens highlighted, masked dimmed) and
warn about chat-template problems that make tuned models misbehave."""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.text import Text

from tunewise.example import Example
from tunewise.lm.chat import IGNORE_INDEX, encode_example, render_example, render_prompt

TRAINED = ("black on green3", "black on green1")  # alternating, so token boundaries show
MASKED = "dim"

_PROBE = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello there, friend."}]


def render_tokens(example: Example, tokenizer: Any, loss_on: str = "answers", max_tokens: int | None = None) -> tuple[Text, int, int]:
    """The rendered example as rich Text (trained tokens highlighted, masked dimmed), its token count and trained count."""
    rendered = render_example(example, tokenizer, loss_on)  # type: ignore[arg-type]
    enc = encode_example(example, tokenizer, loss_on=loss_on, max_tokens=max_tokens)
    offsets = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    text = Text()
    pos, k = 0, 0
    for j, label in enumerate(enc.labels):
        start, end = offsets[j]
        end = max(end, pos)
        if label != IGNORE_INDEX:
            style = TRAINED[k % 2]
            k += 1
        else:
            style = MASKED
        text.append(rendered.text[pos:end], style=style)
        pos = end
    if pos < len(rendered.text):
        text.append(rendered.text[pos:], style="strike dim" if enc.truncated else MASKED)
    return text, len(enc), enc.n_trained


def preview_examples(
    examples: Sequence[Example], tokenizer: Any, console: Console, *, n: int = 3, loss_on: str = "answers", max_tokens: int | None = None
) -> None:
    """Print the first ``n`` examples as the model sees them, each with its token counts."""
    for i, example in enumerate(examples[:n]):
        where = f"{example.meta.get('source', '?')}:{example.meta.get('line', '?')}" if example.meta else ""
        console.rule(f"example {i + 1}  {where}")
        # a pair shows both sides, a KTO answer its mark; both as the preference objectives score them (last answer)
        mode = "last_turn" if example.rejected is not None or example.desirable is not None else loss_on
        if example.desirable is not None:
            console.print("[bold green]desirable[/bold green] answer" if example.desirable
                          else "[bold red]undesirable[/bold red] answer")
        sides = [("chosen", example), ("rejected", example.rejected_example())] if example.rejected is not None else [(None, example)]
        for side, shown in sides:
            text, total, trained = render_tokens(shown, tokenizer, mode, max_tokens)  # type: ignore[arg-type]
            extra = f", augmented ({example.meta['augmented']})" if example.meta.get("augmented") else ""
            cut = f", cut to {max_tokens}" if max_tokens and total >= max_tokens and example.meta.get("truncated") else ""
            share = f"{trained / total:.0%}" if total else "0%"
            head = f"[bold]{side}:[/bold] " if side else ""
            console.print(f"{head}[bold]{total}[/bold] tokens, [bold green]{trained}[/bold green] trained ({share}){extra}{cut}")
            console.print(text, highlight=False, markup=False)
    console.print(Text.assemble(("trained", TRAINED[0]), "  ", ("masked (not trained)", MASKED)))


def template_warnings(
    tokenizer: Any, *, generation_tokenizer: Any = None, generation_eos_ids: Sequence[int] | None = None
) -> list[str]:
    """Problems with the chat template: the assistant turn not ending with the eos token the model generates (a common
    reason why tuned models never stop), and the template used for training differing from the one for generation."""
    warnings: list[str] = []
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return ["the tokenizer has no chat template: chat data cannot be rendered (plain text only)"]
    full = tokenizer.apply_chat_template(_PROBE, tokenize=False)
    answer = _PROBE[-1]["content"]
    eos = tokenizer.eos_token
    at = full.rfind(answer)
    after = full[at + len(answer) :] if at >= 0 else ""
    if not eos:
        warnings.append("the tokenizer has no eos token: a tuned model has no token to stop at")
    elif at >= 0 and not after.lstrip(" \t\n").startswith(eos):
        warnings.append(
            f"the chat template does not end the assistant turn with the eos token {eos!r} (after the answer comes "
            f"{after[:24]!r}); a tuned model learns to end turns with a token generation does not stop at and may never stop"
        )
    if generation_eos_ids is not None and eos and tokenizer.convert_tokens_to_ids(eos) not in set(generation_eos_ids):
        warnings.append(
            f"generation stops at token ids {sorted(set(generation_eos_ids))} but training ends turns with {eos!r} "
            f"(id {tokenizer.convert_tokens_to_ids(eos)}); add it to generation_config.eos_token_id"
        )
    prompt = render_prompt(_PROBE[:-1], tokenizer)
    if not full.startswith(prompt):
        warnings.append(
            "the generation prompt (add_generation_prompt=True) is not how training renders the same conversation: "
            f"training has {full[len(_common_prefix(full, prompt)) :][:30]!r} where generation has "
            f"{prompt[len(_common_prefix(full, prompt)) :][:30]!r}"
        )
    if generation_tokenizer is not None:
        other = getattr(generation_tokenizer, "chat_template", None)
        if other != template:
            warnings.append(
                "the chat template used for training differs from the one used for generation; save the training "
                "tokenizer (with its chat template) next to the model and generate with it"
            )
    return warnings


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]
