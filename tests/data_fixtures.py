"""Self-contained fixtures for the data tests: a tiny BPE tokenizer with a ChatML template (no network).

Registered as a pytest plugin by tests/conftest.py, so the fixtures are available without importing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|im_end|>", "<|im_start|>", "<unk>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Translate to French: good morning. Bonjour.",
    "What is the capital of France? Paris is the capital of France.",
    "user assistant system tool text question answer label positive negative neutral",
    "List three colours: red, green, blue. 1. one 2. two 3. three - item * point",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}<>-_=+/\\|@#$%^&*~`",
]


def build_tokenizer(directory: Path, template: str = CHATML) -> Path:
    """Train a tiny byte-level BPE tokenizer, save it as a transformers tokenizer folder and return the folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<unk>", padding_side="left"
    )
    fast.chat_template = template
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return directory


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="session")
def data_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ChatML tokenizer folder (eos = pad = <|im_end|>)."""
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def data_tokenizer(data_tokenizer_dir: Path) -> Any:
    return load_tokenizer(data_tokenizer_dir)


def write_jsonl(path: Path, rows: list[Any], *, newline: str = "\n") -> Path:
    """Write rows (dicts are dumped as JSON, strings/bytes written as they are) one per line."""
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, bytes):
                f.write(row + newline.encode())
            elif isinstance(row, str):
                f.write((row + newline).encode("utf-8"))
            else:
                f.write((json.dumps(row, ensure_ascii=False) + newline).encode("utf-8"))
    return path


def chat(user: str, answer: str, **meta: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
    row.update(meta)
    return row


def build_model_dir(directory: Path) -> Path:
    """The tiny tokenizer plus a randomly initialised tiny LlamaForCausalLM saved next to it (for plumbing tests)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    build_tokenizer(directory)
    tok = load_tokenizer(directory)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def data_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny tokenizer and a random tiny Llama: loads with tunewise.models like any model folder."""
    return build_model_dir(tmp_path_factory.mktemp("tinyllama"))
