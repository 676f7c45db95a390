"""GGUF export: the file transformers reads back holds the merged model, the run's chat template and stop token, and
an Ollama Modelfile that renders like training; a mismatch fails the export with nothing kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_export import train_tiny_run

REPO = Path(__file__).resolve().parents[1]

# SmolLM2-Instruct's template: it adds a default system prompt to conversations that have none
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def gguf_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    return train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "gguf-run")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tunewise", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


def test_gguf_export_round_trip(gguf_run: tuple[Any, Path]) -> None:
    from tunewise.export.gguf import read_metadata
    from tunewise.export.modelfile import parse_modelfile
    from tunewise.lm.loading import load_tokenizer

    _, run = gguf_run
    done = _cli("export", str(run), "--gguf", "f32", "--gguf", "q8_0", "--sample", "6")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "GGUF exports" in done.stdout
    reports = {t: json.loads((run / "export" / f"gguf-{t}.json").read_text()) for t in ("f32", "q8_0")}
    f32, q8 = reports["f32"], reports["q8_0"]
    assert f32["verified"] and q8["verified"]
    assert f32["max_abs_logit_diff"] <= 1e-3 and f32["greedy_identical"] == f32["greedy_compared"] == 6
    assert q8["layout_max_abs_logit_diff"] <= 1e-3  # the file holds exactly the q8_0-rounded merged weights
    assert 0 < q8["max_abs_logit_diff"] < 2.0  # quantized: close to the merged model, not equal
    assert q8["size_bytes"] < 0.4 * f32["size_bytes"]
    assert q8["tensor_types"]["q8_0"] > 0 and q8["tensor_types"]["f32"] > 0  # norms stay f32
    # every held-out conversation + two made-up ones, with and without the generation prompt
    assert f32["template"]["renderings_compared"] == 2 * (6 + 2) and not f32["template"]["problems"]

    tokenizer = load_tokenizer(str(run / "model"))
    folder = run / "export" / "gguf-q8_0"
    metadata = read_metadata(folder / "model-q8_0.gguf")
    assert metadata["general.architecture"] == "llama"
    assert metadata["tokenizer.chat_template"] == tokenizer.chat_template
    assert metadata["tokenizer.ggml.eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert metadata["tokenizer.ggml.tokens.count"] == 1536
    written = parse_modelfile((folder / "Modelfile").read_text(encoding="utf-8"))
    assert written["from"] == "./model-q8_0.gguf" and written["stop"] == ["<|im_end|>"]
    assert '{{ "<|im_start|>assistant\\n" }}' in written["template"]
    assert not list((run / "export").glob(".gguf-*"))  # no temporary folder left


def test_a_mismatch_fails_the_export_and_keeps_nothing(gguf_run: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose stop token is not training's end-of-turn token (the classic "never stops" export) is refused."""
    from typer.testing import CliRunner

    import tunewise.export.gguf_run as gguf_run_module
    from tunewise.cli import app

    _, run = gguf_run
    real = gguf_run_module.write_gguf

    def wrong_stop_token(*args: Any, **kwargs: Any) -> Any:
        kwargs["stop_token_id"] = kwargs["tokenizer"].bos_token_id
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_run_module, "write_gguf", wrong_stop_token)
    result = CliRunner().invoke(app, ["export", str(run), "--gguf", "f16", "--sample", "4"])
    assert result.exit_code == 1, result.output
    assert "f16 GGUF export failed its check" in result.output and "eos token id" in result.output
    assert not (run / "export" / "gguf-f16").exists()
    assert not list((run / "export").glob(".gguf-f16*"))
    assert json.loads((run / "export" / "gguf-f16.json").read_text())["verified"] is False


def test_unknown_type_is_a_user_mistake(gguf_run: tuple[Any, Path]) -> None:
    from typer.testing import CliRunner

    from tunewise.cli import app

    _, run = gguf_run
    result = CliRunner().invoke(app, ["export", str(run), "--gguf", "q4_k_m"])
    assert result.exit_code == 2
    assert "llama-quantize" in result.output and "q8_0" in result.output


def test_modelfile_carries_a_templates_default_system_prompt(tiny_tokenizer: Any) -> None:
    from tunewise.export.modelfile import (check_segments, derive_segments, modelfile_text, parse_modelfile,
                                           segments_from_go_template)

    tokenizer = _with_template(tiny_tokenizer, SMOLLM2_TEMPLATE)
    seg = derive_segments(tokenizer)
    assert seg.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    conversations = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "?"}],
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "a \"quoted\"\nline"}],
    ]
    assert check_segments(seg, tokenizer, conversations) == []
    written = parse_modelfile(modelfile_text("m.gguf", seg, ["<|im_end|>"], system=None, title="t"))
    assert written["system"] == seg.default_system
    from_file = segments_from_go_template(written["template"])
    for messages in conversations:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert from_file.render(messages, add_generation_prompt=True, system=written["system"]) == expected


def test_a_template_ollama_cannot_express_is_refused(tiny_tokenizer: Any) -> None:
    from tunewise.export.modelfile import TemplateNotPortable, check_segments, derive_segments

    # keeps only the last two turns: no per-message Go template renders that
    last_two = ("{% for message in messages[-2:] %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
                "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tokenizer = _with_template(tiny_tokenizer, last_two)
    try:
        seg = derive_segments(tokenizer)
    except TemplateNotPortable:
        return
    turns = [{"role": r, "content": c} for r, c in (("user", "a"), ("assistant", "b"), ("user", "c"))]
    assert check_segments(seg, tokenizer, [turns])


def test_tensor_storage_types() -> None:
    from tunewise.export.gguf import check_gguf_type, tensor_type

    assert tensor_type("blk.0.attn_norm.weight", (96,), "q8_0", True) == "f32"
    assert tensor_type("blk.0.attn_q.weight", (96, 96), "q4_0", True) == "q4_0"
    assert tensor_type("blk.0.attn_q.weight", (96, 100), "q8_0", True) == "f16"  # rows not whole 32-blocks
    assert tensor_type("token_embd.weight", (1536, 96), "q4_1", True) == "q8_0"  # doubles as the output layer
    assert tensor_type("token_embd.weight", (1536, 96), "q4_1", False) == "q4_1"
    assert check_gguf_type(" Q8_0 ") == "q8_0"
    with pytest.raises(ValueError, match="choose from"):
        check_gguf_type("q3")


def _with_template(tokenizer: Any, template: str) -> Any:
    import copy

    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other
