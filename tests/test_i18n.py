"""The one message catalogue (tunewise/catalog.py + tunewise/locale/): every message the code shows has its Chinese,
every Chinese entry has a message that uses it, the compiled .mo is the .po, and the CLI speaks Chinese when asked by
--lang, $TUNEWISE_LANG or a Chinese locale, and English (byte for byte) when nothing asks."""

from __future__ import annotations

import ast
import functools
import gettext
import json
import os
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

from tunewise import catalog
from tunewise.catalog import LANGUAGES, LOCALE_DIR, resolve_language

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tunewise"
MARKERS = {"_": 1, "N_": 1, "ngettext": 2}  # the catalogue's functions and how many message arguments each takes


@functools.lru_cache(maxsize=None)
def _used_messages() -> tuple[set[str], list[str]]:
    """Every message tunewise/ marks (_ / N_ / ngettext with literal text), and the calls that are not literal text."""
    found: set[str] = set()
    problems: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        imports_underscore = any(isinstance(n, ast.ImportFrom) and n.module == "tunewise.catalog"
                                 and any(a.name == "_" for a in n.names) for n in ast.walk(tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                                                       and n.func.id in MARKERS for n in ast.walk(node)):
                problems.append(f"{where}:{node.lineno}: a message inside an f-string (pybabel does not extract it)")
            if imports_underscore and isinstance(node, ast.Name) and node.id == "_" and isinstance(node.ctx, ast.Store):
                problems.append(f"{where}:{node.lineno}: assigns to _, which is the catalogue's function here")
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in MARKERS):
                continue
            if node.func.id == "_" and not imports_underscore:
                continue  # some other _ (none today), not the catalogue's
            args = node.args[:MARKERS[node.func.id]]
            if len(args) < MARKERS[node.func.id] or not all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                                            for a in args):
                problems.append(f"{where}:{node.lineno}: {node.func.id}() needs literal text (an f-string or a variable"
                                " is never translated: use _('... {name} ...').format(name=...))")
                continue
            found.add(args[0].value if node.func.id != "ngettext" else (args[0].value, args[1].value))
    for template in sorted(PACKAGE.rglob("templates/*.html")):  # the report's words: {{ _("...") }}
        from jinja2 import Environment
        from jinja2.ext import extract_from_ast

        ast_ = Environment().parse(template.read_text(encoding="utf-8"))
        found.update(message for _line, function, message in extract_from_ast(ast_, ("_",)) if isinstance(message, str))
    return found, problems


def _po(lang: str):
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / "tunewise.po", "rb") as f:
        return read_po(f)


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_every_message_is_translated_and_every_translation_used(lang: str) -> None:
    used, problems = _used_messages()
    assert not problems, "\n".join(problems)
    po = _po(lang)
    entries = {m.id: m for m in po if m.id}
    untranslated = sorted(str(k) for k in used if k not in entries or not all(
        [entries[k].string] if isinstance(entries[k].string, str) else entries[k].string))
    assert not untranslated, f"no {lang} text (run bash scripts/i18n.sh, then translate in the .po): {untranslated}"
    unused = sorted(str(k) for k in entries if k not in used)
    assert not unused, f"{lang} entries no message uses any more (bash scripts/i18n.sh drops them): {unused}"
    assert not [m.id for m in po if m.fuzzy and m.id], "fuzzy entries are not shown: check and unmark them"
    for message in entries.values():
        english = message.id if isinstance(message.id, tuple) else (message.id,)
        texts = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set().union(*map(_fields, english))
        for text in texts:
            assert _fields(text) == wanted, f"{message.id!r}: the {lang} text fills {_fields(text)}, not {wanted}"


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_the_compiled_catalogue_is_the_po(lang: str) -> None:
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / "tunewise.mo", "rb") as f:
        compiled = {k: v for k, v in gettext.GNUTranslations(f)._catalog.items() if k}  # noqa: SLF001
    source = {}
    for m in _po(lang):
        if not m.id:
            continue
        if isinstance(m.id, tuple):
            source.update({(m.id[0], i): s for i, s in enumerate(m.string)})
        else:
            source[m.id] = m.string
    assert compiled == source, "the .mo is not the .po: run bash scripts/i18n.sh and commit both"


def test_every_id_of_the_checklist_and_dashboard_is_a_marked_message() -> None:
    used, _problems = _used_messages()
    assert set(catalog.MESSAGES.values()) <= used
    assert catalog.text("item.early_stopping", "zh") == "设置早停机制"
    assert catalog.text("item.early_stopping", "en") == "Early stopping"


def test_language_choice_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("TUNEWISE_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    assert resolve_language(None) == "en"
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert resolve_language(None) == "zh"
    monkeypatch.setenv("LC_ALL", "C.UTF-8")  # LC_ALL is read before LANG
    assert resolve_language(None) == "en"
    monkeypatch.setenv("LC_MESSAGES", "fr_FR.UTF-8")
    monkeypatch.setenv("LANGUAGE", "zh_TW:en")
    assert resolve_language(None) == "zh"
    monkeypatch.setenv("LANGUAGE", "de")  # a language tunewise has not: English, not an error
    assert resolve_language(None) == "en"
    monkeypatch.setenv("TUNEWISE_LANG", "zh")  # beats the locale
    assert resolve_language(None) == "zh" and resolve_language("en") == "en"  # --lang beats both


# --- through the CLI ----------------------------------------------------------------------------------------------------

def _tunewise(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if k not in ("TUNEWISE_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    base.update({"PYTHONPATH": str(ROOT), "LANG": "C.UTF-8", "COLUMNS": "200", **(env or {})})
    return subprocess.run([sys.executable, "-m", "tunewise", *args], capture_output=True, text=True, env=base,
                          cwd=cwd, timeout=120)


def test_an_unknown_language_is_one_line_exit_2() -> None:
    done = _tunewise("--lang", "fr", "--version")
    assert done.returncode == 2 and "choose one of en, zh" in done.stderr, done.stderr


def test_a_config_error_in_chinese_by_flag_env_and_locale(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("model: tiny\nlora: {r: 0}\nmethod: magic\ntypo_field: 1\n", encoding="utf-8")
    english = _tunewise("data", "prepare", str(config))
    assert english.returncode == 2
    assert english.stderr.startswith("error: invalid config:") and "unknown field (check the spelling" in english.stderr
    assert "Input should be greater than 0" in english.stderr  # pydantic's own words, untouched
    for how in (dict(args=("--lang", "zh")), dict(env={"TUNEWISE_LANG": "zh"}), dict(env={"LANG": "zh_CN.UTF-8"})):
        done = _tunewise(*how.get("args", ()), "data", "prepare", str(config), env=how.get("env"))
        assert done.returncode == 2, (how, done.stderr)
        assert done.stderr.startswith("错误： 配置无效："), (how, done.stderr)
        assert "typo_field: 未知字段（请检查拼写" in done.stderr, done.stderr
        assert "lora.r: 应大于 0（实际为 0）" in done.stderr, done.stderr  # pydantic's message, translated by type
        assert "method: 未知的方法 'magic'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert _tunewise("--lang", "en", "data", "prepare", str(config), env={"LANG": "zh_CN.UTF-8"}).stderr == english.stderr


def test_data_tables_and_report_in_chinese(tmp_path: Path, tiny_dir: Path, tiny_tokenizer: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """61 chat rows prepared with the tiny model (in this process: the tokenizer is the session's), then the data tables
    through `tunewise --lang zh data stats RUN` and the report under a Chinese locale (English: tests/test_data*.py,
    tests/test_eval_labels.py)."""
    from tunewise.config import config_from_dict
    from tunewise.data.prepare import prepare_data
    from tunewise.report.html import build_report
    from tunewise.runs import init_run

    rows = [{"messages": [{"role": "user", "content": f"问题 {i}: what is {i} plus {i}?"},
                          {"role": "assistant", "content": str(2 * i)}]} for i in range(60)]
    rows.append({"messages": [{"role": "user", "content": "hi"}]})  # one rejected row: the rejection table shows
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                                         encoding="utf-8")
    config = config_from_dict({"name": "zh", "output_dir": str(tmp_path), "model": str(tiny_dir),
                               "data": {"path": str(tmp_path / "rows.jsonl"), "max_tokens": 64}})
    run = init_run(config)
    prepare_data(config.data, tiny_tokenizer, run.data, loss_on=config.training.loss_on, progress=False)

    done = _tunewise("--lang", "zh", "data", "stats", str(run.root))
    assert done.returncode == 0, done.stderr
    for words in ("格式：chat", "各阶段行数", "符合 token 长度限制", "被拒绝的行（1；见 rejects.jsonl）", "角色未知或顺序错误",
                  "token 数（p50 / p90 / p99 / 最大）", "训练占比", "训练集", "验证集", "测试集"):
        assert words in done.stdout, (words, done.stdout)
    for words in ("rows per stage", "within token limits", "trained share"):
        assert words not in done.stdout, (words, done.stdout)

    for variable in ("TUNEWISE_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(catalog, "_current", None)  # no language set in this process (an in-process CLI test may have)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")  # the locale alone asks for Chinese
    html = build_report(run.root).read_text(encoding="utf-8")
    for words in ('<html lang="zh">', "最佳实践检查清单", "<h2>数据准备</h2>", "格式：chat", "划分训练/验证/测试集", "config.yaml（可原样重新运行："):
        assert words in html, words
    assert "<h2>Data</h2>" not in html and "Best-practice checklist" not in html
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert "<h2>Data</h2>" in build_report(run.root).read_text(encoding="utf-8")


def test_a_data_error_in_chinese(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"messages": [{"role": "user", "content": ""}]}\n', encoding="utf-8")
    english = _tunewise("data", "convert", "rows.jsonl", "out.jsonl", "--to", "alpaca", cwd=tmp_path)
    assert english.returncode == 2 and "error: no row of rows.jsonl could be converted to alpaca" in english.stderr
    chinese = _tunewise("data", "convert", "rows.jsonl", "out.jsonl", "--to", "alpaca", cwd=tmp_path,
                        env={"TUNEWISE_LANG": "zh"})
    assert chinese.returncode == 2, chinese.stderr
    assert "错误： rows.jsonl 中没有任何行能转换为 alpaca；详见 out.jsonl.rejects.jsonl" in chinese.stderr, chinese.stderr
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path}\nmodel: tiny\ndata: {{path: nowhere.jsonl}}\n", encoding="utf-8")
    missing = _tunewise("--lang", "zh", "data", "prepare", str(config), "--no-progress")
    assert missing.returncode == 2 and "找不到数据文件 'nowhere.jsonl'" in missing.stderr, missing.stderr
