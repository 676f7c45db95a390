"""The committed tiny model fixture: loads with the Auto classes, speaks ChatML, stops at <|im_end|>."""

from __future__ import annotations

import string

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunewise.models.tiny import FIXTURE_DIR, IM_END, _is_model_dir, ensure_tiny_model

pytestmark = pytest.mark.skipif(not _is_model_dir(FIXTURE_DIR), reason="run scripts/build_tiny_model.py first")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ensure_tiny_model())


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(ensure_tiny_model()).eval()


def test_ensure_returns_the_shipped_fixture() -> None:
    assert ensure_tiny_model() == FIXTURE_DIR
    size = sum(p.stat().st_size for p in FIXTURE_DIR.iterdir() if p.is_file())
    assert size <= 8 * 1024 * 1024


def test_model_config(model, tokenizer) -> None:
    n = sum(p.numel() for p in model.parameters())
    assert 200_000 <= n <= 2_000_000
    assert model.config.model_type == "llama"
    assert model.config.tie_word_embeddings
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == IM_END
    assert model.config.eos_token_id == eos == model.generation_config.eos_token_id
    assert model.config.pad_token_id == eos
    assert model.config.vocab_size == len(tokenizer)


def test_chat_template_is_chatml(tokenizer) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\nhello<|im_end|>\n")
    prompt = tokenizer.apply_chat_template(msgs[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)
    assert ids[-2] == tokenizer.eos_token_id  # the assistant turn ends with eos, then "\n"
    assert tokenizer.convert_ids_to_tokens(ids[:1]) == ["<|im_start|>"]  # no bos prepended


def test_assistant_mask_marks_answer_and_eos(tokenizer) -> None:
    msgs = [{"role": "user", "content": "copy: a b"}, {"role": "assistant", "content": "a b"}]
    enc = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "a b<|im_end|>"


def test_letters_are_single_tokens(tokenizer) -> None:
    for c in string.ascii_lowercase:
        assert len(tokenizer.encode(c, add_special_tokens=False)) == 1
        assert len(tokenizer.encode(" " + c, add_special_tokens=False)) == 1
    assert len(tokenizer.encode("c a t s", add_special_tokens=False)) == 4


def test_tokenizer_settings_survive_save_load(tokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.padding_side == tokenizer.padding_side == "left"
    assert again.model_max_length == tokenizer.model_max_length == 512
    assert again.chat_template == tokenizer.chat_template


def test_generates_and_stops_at_eos(model, tokenizer) -> None:
    prompts = ["copy: d o g", "spell: tree"]
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False) for p in prompts]
    enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False)
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        assert tokenizer.eos_token_id in row[1:]  # says something, then stops
