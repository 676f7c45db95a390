"""Talk to a model in the terminal the way it was trained to be talked to: the run's chat template (rendered by
tunewise/lm/chat.py, as in training and evaluation), its system prompt and its stop tokens, answers streamed
as they are generated (transformers' ``TextIteratorStreamer``), with a history, ``/reset`` and ``/system``.

:func:`load_chat_target` takes what users have: a run directory, an adapter folder, a merged or quantized export, a
model folder, or a GGUF file (or a folder holding one). ``--compare base`` answers every prompt with the base model
too; for an adapter that is the same weights with the adapter switched off (no second copy in memory).
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

HELP = "commands: /reset (forget the conversation), /system TEXT (set the system prompt; /system alone clears it), " \
       "/history, /help, /exit"


@dataclass
class ChatModel:
    """A loaded model ready to chat: ``base_context`` (when set) is a context manager factory under which ``model``
    answers as the base model."""

    name: str
    model: Any
    tokenizer: Any
    system_prompt: str | None = None
    base_model: Any = None
    base_context: Callable[[], Any] | None = None


def _gguf_file(target: Path) -> Path | None:
    if target.is_file() and target.suffix == ".gguf":
        return target
    if target.is_dir() and not (target / "config.json").is_file():
        found = sorted(target.glob("*.gguf"))
        return found[0] if len(found) == 1 else None
    return None


def load_chat_target(target: str | Path, *, compare_base: bool = False, device: str = "cpu") -> ChatModel:
    """Load ``target`` for chatting (see the module docstring); with ``compare_base`` also its base model."""
    from tunewise.lm.loading import classify as resolve_source
    from tunewise.lm.loading import load_source
    from tunewise.lm.loading import load_model

    path = Path(target).expanduser()
    gguf = _gguf_file(path)
    if gguf is not None:
        from tunewise.lm.loading import load_gguf

        model, tokenizer = load_gguf(gguf)
        if compare_base:
            raise ValueError(f"{gguf} carries no reference to its base model; compare a run directory instead "
                             "(`tunewise chat RUN --compare base`)")
        return ChatModel(gguf.name, model, tokenizer, _modelfile_system(gguf.parent))
    source = resolve_source(path)
    system = None
    base_name = source.base
    if source.run_dir is not None:
        from tunewise.runs import config_of_run

        config, _ = config_of_run(source.run_dir)
        system = config.data.system_prompt
        base_name = config.model
    model, tokenizer = load_source(source, device=device, dtype=torch.float32)
    model.eval()
    chat = ChatModel(source.name, model, tokenizer, system)
    if compare_base:
        if source.base is not None:  # an adapter: the base is the same model with the adapter off
            chat.base_context = model.disable_adapter
        elif base_name is not None:
            chat.base_model = load_model(base_name, dtype=torch.float32, device=device).eval()
        else:
            raise ValueError(f"{path} is a full model with no recorded base; pass its run directory to compare "
                             "with the base")
    return chat


def _modelfile_system(folder: Path) -> str | None:
    modelfile = folder / "Modelfile"
    if not modelfile.is_file():
        return None
    from tunewise.export.modelfile import parse_modelfile

    return parse_modelfile(modelfile.read_text(encoding="utf-8"))["system"]


@dataclass
class Conversation:
    """The messages so far (the system prompt first when there is one)."""

    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        tail = [{"role": "user", "content": user}] if user is not None else []
        return head + self.turns + tail


def stream_answer(model: Any, tokenizer: Any, messages: list[dict[str, str]], *, max_new_tokens: int = 256,
                  context: Callable[[], Any] | None = None) -> Iterator[str]:
    """Yield the greedy answer to ``messages`` piece by piece as it is generated; it ends at the model's stop token."""
    from transformers import TextIteratorStreamer

    from tunewise.lm.generate import stop_token_ids
    from tunewise.lm.chat import render_prompt

    prompt = render_prompt(messages, tokenizer)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(next(model.parameters()).device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with (context() if context else nullcontext()), torch.inference_mode():
                model.generate(**inputs, streamer=streamer, max_new_tokens=max_new_tokens, do_sample=False,
                               eos_token_id=stop_token_ids(tokenizer, model), pad_token_id=tokenizer.pad_token_id)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if failure:
        raise failure[0]


def answer(chat: ChatModel, conversation: Conversation, user: str, *, which: str = "tuned",
           max_new_tokens: int = 256, on_piece: Callable[[str], None] = lambda piece: None) -> str:
    """Answer ``user`` in ``conversation`` with the tuned (or ``which="base"``) model, calling ``on_piece`` with each
    streamed piece; the turn is added to the conversation. Returns the whole answer."""
    model, context = chat.model, None
    if which == "base":
        model, context = (chat.base_model, None) if chat.base_model is not None else (chat.model, chat.base_context)
    pieces = []
    for piece in stream_answer(model, chat.tokenizer, conversation.messages(user), max_new_tokens=max_new_tokens,
                               context=context):
        pieces.append(piece)
        on_piece(piece)
    text = "".join(pieces).strip()
    conversation.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
    return text


def run_repl(chat: ChatModel, *, compare_base: bool = False, max_new_tokens: int = 256,
             read: Callable[[str], str] = input, write: Callable[[str], None] = print) -> None:
    """The interactive loop: read a line, answer it (streamed), until /exit or end of input."""
    import sys

    system = chat.system_prompt
    conversations = {"tuned": Conversation(system), **({"base": Conversation(system)} if compare_base else {})}

    def out(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    write(f"chatting with {chat.name}" + (" (and its base)" if compare_base else "") + f"; {HELP}")
    if system:
        write(f"system prompt: {system}")
    while True:
        try:
            line = read("you> ")
        except (EOFError, KeyboardInterrupt):
            write("")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/help":
            write(HELP)
        elif text == "/reset":
            for conversation in conversations.values():
                conversation.turns.clear()
            write("(conversation cleared)")
        elif text == "/system" or text.startswith("/system "):
            system = text[len("/system"):].strip() or None
            for conversation in conversations.values():
                conversation.system, conversation.turns = system, []
            write(f"(system prompt: {system})" if system else "(no system prompt)")
        elif text == "/history":
            for message in conversations["tuned"].messages():
                write(f"[{message['role']}] {message['content']}")
        elif text.startswith("/"):
            write(f"unknown command {text.split()[0]}; {HELP}")
        else:
            for which, conversation in conversations.items():
                out(f"{which}> " if compare_base else "model> ")
                answer(chat, conversation, text, which=which, max_new_tokens=max_new_tokens, on_piece=out)
                out("\n")
