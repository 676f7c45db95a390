"""Preview: the rendered template with trained tokens highlighted and masked ones dimmed; template warnings."""

from __future__ import annotations

from rich.console import Console

from tests.data_fixtures import CHATML, load_tokenizer
from tunewise.example import Example
from tunewise.data.preview import MASKED, TRAINED, preview_examples, render_tokens, template_warnings

EX = Example([{"role": "user", "content": "What is red?"}, {"role": "assistant", "content": "A colour."}], {"source": "f.jsonl", "line": 7})


def styled(text, styles) -> str:
    return "".join(text.plain[s.start : s.end] for s in text.spans if s.style in styles)


def test_trained_tokens_are_the_answer_and_its_end_token(data_tokenizer):
    text, total, trained = render_tokens(EX, data_tokenizer)
    assert text.plain == "<|im_start|>user\nWhat is red?<|im_end|>\n<|im_start|>assistant\nA colour.<|im_end|>\n"
    assert styled(text, TRAINED) == "A colour.<|im_end|>"
    assert styled(text, (MASKED,)) == text.plain.replace("A colour.<|im_end|>", "")
    assert 0 < trained < total


def test_weight_zero_turn_is_masked(data_tokenizer):
    ex = Example([{"role": "user", "content": "a"}, {"role": "assistant", "content": "skip me", "weight": 0},
                  {"role": "user", "content": "b"}, {"role": "assistant", "content": "learn me"}])  # fmt: skip
    text, _, _ = render_tokens(ex, data_tokenizer)
    assert styled(text, TRAINED) == "learn me<|im_end|>"


def test_preview_output(data_tokenizer):
    console = Console(record=True, width=120, color_system="truecolor")
    preview_examples([EX, EX], data_tokenizer, console, n=1)
    out = console.export_text()
    assert "example 1  f.jsonl:7" in out and "example 2" not in out
    assert "<|im_start|>assistant\nA colour.<|im_end|>" in out
    total = len(data_tokenizer(text := render_tokens(EX, data_tokenizer)[0].plain, add_special_tokens=False)["input_ids"])
    assert f"{total} tokens" in out and "trained" in out
    assert text


def test_template_warnings(data_tokenizer_dir, data_tokenizer):
    assert template_warnings(data_tokenizer) == []
    no_eos = load_tokenizer(data_tokenizer_dir)
    no_eos.chat_template = CHATML.replace("{{ m['content'] }}<|im_end|>", "{{ m['content'] }}\n")
    assert any("never stop" in w for w in template_warnings(no_eos))
    thinking = load_tokenizer(data_tokenizer_dir)
    thinking.chat_template = CHATML.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>assistant\n<think>\n{% endif %}")
    assert any("generation prompt" in w for w in template_warnings(thinking))
    assert any("differs from the one used for generation" in w for w in template_warnings(data_tokenizer, generation_tokenizer=thinking))
    eos_id = data_tokenizer.eos_token_id
    assert template_warnings(data_tokenizer, generation_eos_ids=[eos_id]) == []
    assert any("generation stops at" in w for w in template_warnings(data_tokenizer, generation_eos_ids=[eos_id + 1]))
