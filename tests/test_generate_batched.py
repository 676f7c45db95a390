"""Batched generation (left padding, length sorting, a shared prefix computed once) answers exactly as one prompt at a
time does, long prompts included."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tunewise.lm import shared_prefix
from tunewise.lm.generate import generate
from tunewise.lm.shared_prefix import common_prefix_length

SYSTEM = ("You are a careful assistant. Answer with the topic of the message in one word, lower case, and nothing "
          "else: no punctuation, no explanation, no greeting.")


@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Any) -> Any:
    from tunewise.lm.loading import load_model

    return load_model(str(tiny_dir))


def conversations(n: int) -> list[list[dict[str, str]]]:
    """Prompts of very different lengths (2 to ~300 words), all with the same system prompt."""
    rng = random.Random(5)
    words = "the cat sat on a mat while rain fell over hills and rivers near old towns".split()
    out = []
    for i in range(n):
        length = 2 if i % 4 == 0 else rng.randint(3, 300 if i % 3 == 0 else 30)
        out.append([{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": " ".join(rng.choice(words) for _ in range(length))}])
    return out


def test_common_prefix_leaves_every_row_a_token() -> None:
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter row keeps its last token
    assert common_prefix_length([[7, 2], [1, 2]]) == 0
    assert common_prefix_length([]) == 0


def test_batched_answers_equal_one_at_a_time(tiny_model: Any, tiny_tokenizer: Any, monkeypatch: Any) -> None:
    convs = conversations(8)
    used: list[int] = []
    original = shared_prefix.prefix_batch

    def counting(model: Any, rows: Any, pad_id: int) -> Any:
        batch = original(model, rows, pad_id)
        used.append(batch is not None)
        return batch

    monkeypatch.setattr("tunewise.lm.generate.prefix_batch", counting)
    batched = generate(tiny_model, tiny_tokenizer, convs, max_new_tokens=10, batch_size=5)
    assert used and all(used), "the shared system prompt was not computed once per batch"
    padded_only = generate(tiny_model, tiny_tokenizer, convs, max_new_tokens=10, batch_size=5, share_prefix=False)
    single = [generate(tiny_model, tiny_tokenizer, [c], max_new_tokens=10, batch_size=1)[0] for c in convs]
    assert [r["new_tokens"] for r in single] != [0] * len(single)
    assert batched == single
    assert padded_only == single
