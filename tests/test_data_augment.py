"""Augmentation: list answers reordered; paraphrases from a causal LM checked (non-empty, different, marked)."""

from __future__ import annotations

import random

from tunewise.config import DataConfig
from tunewise.data.augment import Paraphraser, accept_paraphrase, augment_examples, list_items, shuffled_answers
from tunewise.example import Example


def test_list_detection_and_shuffle():
    assert list_items("1. a\n2. b\n3. c") == (["a", "b", "c"], "numbered")
    assert list_items("- a\n- b") == (["- a", "- b"], "bullet")
    assert list_items('["x", "y"]') == (['"x"', '"y"'], "json")
    assert list_items("a sentence") is None and list_items("- only one") is None and list_items("- a\n* b") is None
    out = shuffled_answers("1) x\n2) y\n3) z", 3, random.Random(0))
    assert len(out) == 3 and len(set(out)) == 3
    assert all(o.splitlines()[0].startswith("1) ") and sorted(l[3:] for l in o.splitlines()) == ["x", "y", "z"] for o in out)


def test_accept_paraphrase():
    assert not accept_paraphrase("Say hi", "  ")
    assert not accept_paraphrase("Say hi", "say   HI")
    assert accept_paraphrase("Say hi", "Greet me")


def test_paraphrase_plumbing_with_a_tiny_random_llama(data_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(data_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(data_model_dir))
    examples = [Example([{"role": "user", "content": f"name colour {i}"}, {"role": "assistant", "content": "red"}], {"source": "f", "line": i}) for i in range(3)]
    para = Paraphraser(model, tok, max_new_tokens=8, seed=1)
    made, rejected = augment_examples(examples, DataConfig(augment_paraphrase=2), paraphraser=para)
    assert len(made) + rejected == 6 and made
    for ex in made:
        source = examples[ex.meta["augmented_from"]["line"]]
        assert ex.meta["augmented"] == "paraphrase"
        assert ex.messages[0]["content"].strip() and ex.messages[0]["content"] != source.messages[0]["content"]
        assert ex.messages[1] == source.messages[1]  # the answer is untouched
    assert tok.padding_side == AutoTokenizer.from_pretrained(str(data_model_dir)).padding_side  # restored
