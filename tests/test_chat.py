"""`tunewise chat`: driven through a pseudo-terminal like a user at a keyboard; answers are the greedy answers the
evaluation gets (same template, same stop token), streamed; /system, /history, /reset and --compare base work."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_export import train_tiny_run

REPO = Path(__file__).resolve().parents[1]


class Terminal:
    """A command on a pseudo-terminal: type lines, wait for text (stdlib pty, no pexpect needed)."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TERM": "dumb"}
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO,
                                     start_new_session=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 240) -> str:
        """Everything read up to and including ``text``; what follows stays for the next call."""
        deadline = time.time() + timeout
        while text not in self.seen:
            if time.time() > deadline or self.proc.poll() is not None and not self._ready(0):
                raise AssertionError(f"never saw {text!r}; the terminal showed:\n{self.seen[-3000:]}")
            if self._ready(0.5):
                try:
                    self.seen += os.read(self.master, 4096).decode("utf-8", "replace").replace("\r\n", "\n")
                except OSError:  # the command exited and closed the terminal
                    pass
        head, _, rest = self.seen.partition(text)
        self.seen = rest
        return head + text

    def _ready(self, timeout: float) -> bool:
        return bool(select.select([self.master], [], [], timeout)[0])

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


@pytest.fixture(scope="module")
def chat_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    return train_tiny_run(tiny_dir, tmp_path_factory.getbasetemp() / "ship-run")


def _greedy(chat: Any, messages: list[dict[str, str]], *, base: bool = False) -> str:
    """The answer tunewise's evaluation gives (evaluate.generate), to hold the chat's answers against."""
    from contextlib import nullcontext

    from tunewise.lm.generate import generate

    with chat.model.disable_adapter() if base else nullcontext():
        return generate(chat.model, chat.tokenizer, [messages], max_new_tokens=12)[0]["text"].strip()


def test_chat_in_a_terminal(chat_run: tuple[Any, Path]) -> None:
    _, run = chat_run
    term = Terminal([sys.executable, "-m", "tunewise", "chat", str(run), "--compare", "base", "--max-new-tokens", "12"])
    term.expect("chatting with reverse-lora (and its base)")
    term.expect("you> ")
    term.type("reverse: c a t")
    term.expect("tuned> ")
    tuned = term.expect("base> ")[: -len("base> ")].strip().splitlines()[-1]
    base = term.expect("you> ")[: -len("you> ")].strip()
    from tunewise.chat import load_chat_target

    chat = load_chat_target(run)
    question = [{"role": "user", "content": "reverse: c a t"}]
    assert tuned == _greedy(chat, question)
    assert base == _greedy(chat, question, base=True)
    assert tuned != base  # the adapter changed the answer

    term.type("/system Reverse the letters.")
    term.expect("(system prompt: Reverse the letters.)")
    term.expect("you> ")
    term.type("reverse: d o g")
    term.expect("tuned> ")
    second = term.expect("base> ")[: -len("base> ")].strip().splitlines()[-1]
    term.expect("you> ")
    assert second == _greedy(chat, [{"role": "system", "content": "Reverse the letters."},
                                   {"role": "user", "content": "reverse: d o g"}])
    term.type("/history")
    history = term.expect("you> ")
    assert "[system] Reverse the letters." in history and "[user] reverse: d o g" in history
    assert f"[assistant] {second}" in history and "c a t" not in history.split("/history", 1)[-1]
    term.type("/reset")
    term.expect("(conversation cleared)")
    term.expect("you> ")
    term.type("/history")
    after = term.expect("you> ")
    assert "[system] Reverse the letters." in after and "[user]" not in after
    term.type("/exit")
    assert term.close() == 0


def test_answers_stream_and_a_gguf_file_chats_like_its_source(tiny_dir: Path, tmp_path: Path) -> None:
    from tunewise.chat import Conversation, answer, load_chat_target
    from tunewise.export.gguf import write_gguf

    source = load_chat_target(tiny_dir)
    write_gguf(tiny_dir, tmp_path / "tiny-f32.gguf", "f32", tokenizer=source.tokenizer, name="tiny",
               stop_token_id=source.tokenizer.eos_token_id)
    from_gguf = load_chat_target(tmp_path / "tiny-f32.gguf")
    pieces: list[str] = []
    expected = answer(source, Conversation(), "spell: hello", max_new_tokens=16, on_piece=pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == expected  # streamed, not printed at the end
    assert answer(from_gguf, Conversation(), "spell: hello", max_new_tokens=16) == expected


def test_standalone_eval_reads_a_gguf_file(tiny_dir: Path, tiny_tokenizer: Any, tmp_path: Path) -> None:
    """`tunewise eval --model FILE.gguf --data ...` scores a GGUF export like the folder it was written from."""
    import json

    from tunewise.evaluate.standalone import evaluate_model
    from tunewise.export.gguf import write_gguf

    write_gguf(tiny_dir, tmp_path / "tiny-f32.gguf", "f32", tokenizer=tiny_tokenizer, name="tiny",
               stop_token_id=tiny_tokenizer.eos_token_id)
    data = tmp_path / "spell.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"spell: {w}"},
                                                     {"role": "assistant", "content": " ".join(w)}]}) + "\n"
                            for w in ("cat", "house", "green", "table")), encoding="utf-8")
    from_file = evaluate_model(tmp_path / "tiny-f32.gguf", data, tmp_path / "a", max_new_tokens=12, metrics=["exact_match"])
    from_folder = evaluate_model(tiny_dir, data, tmp_path / "b", max_new_tokens=12, metrics=["exact_match"])
    assert from_file["metrics"] == from_folder["metrics"]
    answers = lambda d, n: [json.loads(x)["prediction"] for x in (d / f"predictions_{n}.jsonl").read_text().splitlines()]  # noqa: E731
    assert answers(tmp_path / "a", "tiny-f32.gguf") == answers(tmp_path / "b", tiny_dir.name)
