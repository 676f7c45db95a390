"""An Ollama ``Modelfile`` whose TEMPLATE renders conversations exactly as the run's chat template did in training.

Ollama does not run Jinja: its TEMPLATE is a Go ``text/template``. A wrong translation is the most reported GGUF
failure (the model never stops, or answers garbage), so the translation here is derived from the chat template by
rendering it, not written by hand: every role's text before and after the message content, the generation prompt,
and a system prompt the template adds by itself when a conversation has none (SmolLM2's does). That per-message
model is then checked against the Jinja template on real conversations (:func:`check_segments`); a template it
can't express (one that rewrites contents or earlier turns) is refused rather than approximated.

The Go template emits each piece as a quoted string action (``{{ "..." }}``), so no whitespace trimming of Go's
``{{-`` can touch the text between messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

ROLES = ("system", "user", "assistant")
_SENTINELS = ("\u2063tw-content-one\u2063", "\u2063tw-content-two\u2063")


class TemplateNotPortable(ValueError):
    """The chat template can't be written as an Ollama TEMPLATE that renders byte-for-byte like it."""


@dataclass
class Segments:
    """A chat template as text around each message's content: ``prefix[role] + content + suffix[role]``, then
    ``generation_prompt``; ``default_system`` is the system message the template adds when the first is not one."""

    prefix: dict[str, str] = field(default_factory=dict)
    suffix: dict[str, str] = field(default_factory=dict)
    generation_prompt: str = ""
    default_system: str | None = None

    def render(self, messages: Sequence[dict[str, Any]], *, add_generation_prompt: bool,
               system: str | None = None) -> str:
        """What the Go template below renders, following Ollama's rules: ``system`` (the Modelfile's SYSTEM) is put
        first when the messages have no system message of their own."""
        messages = list(messages)
        default = system if system is not None else self.default_system
        if default is not None and (not messages or messages[0].get("role") != "system"):
            messages = [{"role": "system", "content": default}, *messages]
        text = "".join(self.prefix[m["role"]] + str(m.get("content") or "") + self.suffix[m["role"]] for m in messages)
        return text + (self.generation_prompt if add_generation_prompt else "")


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _split(text: str, sentinel: str, what: str) -> tuple[str, str]:
    if text.count(sentinel) != 1:
        raise TemplateNotPortable(f"the chat template does not write a {what} message's content once, as it is")
    head, tail = text.split(sentinel)
    return head, tail


def derive_segments(tokenizer: Any) -> Segments:
    """Read the per-role text of ``tokenizer``'s chat template by rendering sentinel messages."""
    one, two = _SENTINELS
    seg = Segments()
    try:
        system_only = _render(tokenizer, [{"role": "system", "content": one}])
    except Exception as exc:  # noqa: BLE001 - a template that raises on a lone system message (some refuse it)
        raise TemplateNotPortable(f"the chat template fails on a system message: {exc}") from exc
    seg.prefix["system"], seg.suffix["system"] = _split(system_only, one, "system")
    for role in ("user", "assistant"):
        text = _render(tokenizer, [{"role": "system", "content": one}, {"role": role, "content": two}])
        if not text.startswith(system_only):
            raise TemplateNotPortable(f"the chat template rewrites the system message when a {role} message follows")
        seg.prefix[role], seg.suffix[role] = _split(text[len(system_only):], two, role)
    conversation = [{"role": "system", "content": one}, {"role": "user", "content": two}]
    plain, prompted = _render(tokenizer, conversation), _render(tokenizer, conversation, generation=True)
    if not prompted.startswith(plain):
        raise TemplateNotPortable("the chat template's generation prompt changes the turns before it")
    seg.generation_prompt = prompted[len(plain):]
    alone = _render(tokenizer, [{"role": "user", "content": two}])
    own = seg.prefix["user"] + two + seg.suffix["user"]
    if alone != own:
        head = alone[: -len(own)] if alone.endswith(own) else None
        start, end = seg.prefix["system"], seg.suffix["system"]
        if head is None or not (head.startswith(start) and head.endswith(end)) or len(head) < len(start) + len(end):
            raise TemplateNotPortable("the chat template adds text before a conversation without a system message "
                                      "that is not a system message")
        seg.default_system = head[len(start): len(head) - len(end)]
    return seg


def check_segments(seg: Segments, tokenizer: Any, conversations: Sequence[Sequence[dict[str, Any]]]) -> list[str]:
    """Problems (empty when none) where the per-message model differs from the Jinja template on ``conversations``
    (with and without the generation prompt)."""
    problems = []
    for i, messages in enumerate(conversations):
        clean = [{"role": m["role"], "content": m.get("content")} for m in messages]
        if any(m["role"] not in ROLES for m in clean):
            continue
        for generation in (False, True):
            expected = _render(tokenizer, clean, generation)
            got = seg.render(clean, add_generation_prompt=generation)
            if got != expected:
                at = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
                problems.append(f"conversation {i}: Ollama's rendering differs from the chat template at character "
                                f"{at}: {got[at:at + 40]!r} vs {expected[at:at + 40]!r}")
    return problems


def go_string(text: str) -> str:
    """``text`` as a Go string literal (JSON's escapes are Go's, for the characters JSON escapes)."""
    return json.dumps(text, ensure_ascii=False)


def go_template(seg: Segments) -> str:
    """The Ollama TEMPLATE (Go text/template over ``.Messages``) that renders like ``seg``."""
    parts = ["{{ range .Messages }}"]
    for i, role in enumerate(ROLES):
        parts.append(("{{ if" if i == 0 else "{{ else if") + f' eq .Role "{role}" }}}}')
        parts.append(f"{{{{ {go_string(seg.prefix[role])} }}}}{{{{ .Content }}}}{{{{ {go_string(seg.suffix[role])} }}}}")
    parts.append("{{ end }}{{ end }}")
    parts.append(f"{{{{ {go_string(seg.generation_prompt)} }}}}")
    return "".join(parts)


def modelfile_text(gguf_name: str, seg: Segments, stop_tokens: Sequence[str], *, system: str | None,
                   title: str) -> str:
    """The Modelfile: FROM the GGUF file beside it, TEMPLATE, SYSTEM (the run's, else the template's default) and
    one ``PARAMETER stop`` per end-of-turn token."""
    template = go_template(seg)
    system = system if system is not None else seg.default_system
    for text in (template, system or ""):
        if '"""' in text:
            raise TemplateNotPortable('the chat template or system prompt contains """, which a Modelfile cannot quote')
    lines = [f"# {title}", "# Create the model: ollama create NAME -f Modelfile", f"FROM ./{gguf_name}",
             f'TEMPLATE """{template}"""']
    if system is not None:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {go_string(token)}" for token in stop_tokens]
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict[str, Any]:
    """FROM, TEMPLATE, SYSTEM and the stop parameters of a Modelfile this module wrote (to check what was written)."""
    import re

    out: dict[str, Any] = {"stop": []}
    for key in ("TEMPLATE", "SYSTEM"):
        found = re.search(rf'^{key} """(.*?)"""$', text, re.S | re.M)
        out[key.lower()] = found.group(1) if found else None
    found = re.search(r"^FROM (.+)$", text, re.M)
    out["from"] = found.group(1) if found else None
    out["stop"] = [json.loads(m) for m in re.findall(r"^PARAMETER stop (.+)$", text, re.M)]
    return out


def segments_from_go_template(template: str) -> Segments:
    """The pieces of a TEMPLATE :func:`go_template` wrote, read back from the Modelfile text (so the check runs on
    what is in the file, not on what was meant to be written)."""
    import re

    literal = r'"(?:[^"\\]|\\.)*"'
    seg = Segments()
    for role in ROLES:
        found = re.search(rf'eq \.Role "{role}" }}}}{{{{ ({literal}) }}}}{{{{ \.Content }}}}{{{{ ({literal}) }}}}', template)
        if not found:
            raise TemplateNotPortable(f"the Modelfile's TEMPLATE has no {role} branch")
        seg.prefix[role], seg.suffix[role] = json.loads(found.group(1)), json.loads(found.group(2))
    tail = re.search(rf"{{{{ end }}}}{{{{ end }}}}{{{{ ({literal}) }}}}$", template)
    if not tail:
        raise TemplateNotPortable("the Modelfile's TEMPLATE has no generation prompt after the messages")
    seg.generation_prompt = json.loads(tail.group(1))
    return seg
