"""README.zh.md stays in step with README.md: the same commands in the first code block, the same `tunewise`
commands named, and every one of them a real command."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from tunewise.cli import app

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def first_block_commands(text: str) -> list[str]:
    """The commands of the first fenced code block, comments dropped."""
    block = FENCE.search(text)
    assert block, "no fenced code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def tunewise_commands(text: str) -> set[str]:
    """Names of the `tunewise <command>`s in the code (fenced blocks and `inline` spans) of a README."""
    code = [m.group(1) for m in FENCE.finditer(text)]
    code += re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return {name for span in code for name in re.findall(r"\btunewise ([a-z][a-z-]*)", span)}


def test_first_code_block_is_the_same():
    english, chinese = first_block_commands(_read("README.md")), first_block_commands(_read("README.zh.md"))
    assert english == chinese
    assert english == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]
    assert all((ROOT / cmd.split()[1]).is_file() for cmd in english)


def test_same_tunewise_commands_and_all_real():
    english, chinese = tunewise_commands(_read("README.md")), tunewise_commands(_read("README.zh.md"))
    real = set(typer.main.get_command(app).commands)
    assert english == chinese, f"only in README.md: {sorted(english - chinese)}; only in README.zh.md: {sorted(chinese - english)}"
    assert english <= real, f"not commands of the CLI: {sorted(english - real)}"
    assert len(english) >= 10


def test_a_missing_command_is_caught():
    text = _read("README.zh.md").replace("`tunewise bench RUN`", "`bench RUN`")
    assert tunewise_commands(text) == tunewise_commands(_read("README.md")) - {"bench"}
