"""Labels by position: answers (and the end-of-turn token) are trained, prompts and padding are not."""

from __future__ import annotations

from typing import Any

from tunewise.example import Example
from tunewise.lm.collate import PadCollator
from tunewise.lm.chat import IGNORE_INDEX, encode_example, render_prompt


def trained_text(tokenizer: Any, encoded: Any) -> str:
    return tokenizer.decode([t for t, l in zip(encoded.input_ids, encoded.labels) if l != IGNORE_INDEX])


def conversation() -> Example:
    return Example(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello there"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "yes"},
        ]
    )


def test_answers_and_eos_are_trained_prompt_is_not(tiny_tokenizer: Any) -> None:
    encoded = encode_example(conversation(), tiny_tokenizer)
    eos = tiny_tokenizer.eos_token
    assert trained_text(tiny_tokenizer, encoded) == f"hello there{eos}yes{eos}"
    # the eos token is trained even though it is also the pad token
    assert tiny_tokenizer.pad_token_id == tiny_tokenizer.eos_token_id
    assert encoded.labels.count(tiny_tokenizer.eos_token_id) == 2
    assert encoded.input_ids == [t for t in encoded.input_ids]  # ids are plain ints
    assert len(encoded) == len(tiny_tokenizer.apply_chat_template(conversation().messages, tokenize=True, return_dict=False))


def test_weight_zero_turn_is_not_trained_and_last_turn_option(tiny_tokenizer: Any) -> None:
    example = conversation()
    example.messages[2]["weight"] = 0
    assert trained_text(tiny_tokenizer, encode_example(example, tiny_tokenizer)) == f"yes{tiny_tokenizer.eos_token}"
    last = encode_example(conversation(), tiny_tokenizer, loss_on="last_turn")
    assert trained_text(tiny_tokenizer, last) == f"yes{tiny_tokenizer.eos_token}"
    everything = encode_example(conversation(), tiny_tokenizer, loss_on="all")
    assert everything.n_trained == len(everything)


def test_plain_text_is_trained_whole_with_eos(tiny_tokenizer: Any) -> None:
    encoded = encode_example(Example(messages=[{"role": "text", "content": "the cat sat"}]), tiny_tokenizer)
    assert encoded.n_trained == len(encoded)
    assert encoded.input_ids[-1] == tiny_tokenizer.eos_token_id


def test_truncation_is_marked_and_cuts_the_right(tiny_tokenizer: Any) -> None:
    full = encode_example(conversation(), tiny_tokenizer)
    cut = encode_example(conversation(), tiny_tokenizer, max_tokens=len(full) - 3)
    assert cut.truncated and len(cut) == len(full) - 3
    assert cut.input_ids == full.input_ids[: len(cut)]


def test_generation_prompt_is_the_training_prefix(tiny_tokenizer: Any) -> None:
    example = conversation()
    prompt = render_prompt(example.prompt_messages, tiny_tokenizer)
    full = tiny_tokenizer.apply_chat_template(example.messages, tokenize=False)
    assert full.startswith(prompt)
    assert full[len(prompt):].startswith("yes")


def test_collator_pads_by_position_not_by_id(tiny_tokenizer: Any) -> None:
    a = encode_example(conversation(), tiny_tokenizer)
    b = encode_example(Example(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]), tiny_tokenizer)
    batch = PadCollator(tiny_tokenizer.pad_token_id)([{"input_ids": a.input_ids, "labels": a.labels}, {"input_ids": b.input_ids, "labels": b.labels}])
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(a))
    short = len(b)
    assert batch["attention_mask"][1, short:].sum() == 0
    assert (batch["labels"][1, short:] == IGNORE_INDEX).all()
    # the eos inside the short row is still a label even though eos == pad
    assert (batch["labels"][1, :short] == tiny_tokenizer.eos_token_id).sum() == 1
