"""Evaluation picks its tokenisation from the references' language: BLEU's sacrebleu tokenizer, chrF++'s words,
ROUGE's tokens; the metrics record and the report say which was used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from typer.testing import CliRunner

import tunewise.metrics as M
from tunewise.cli import app
from tunewise.evaluate.compare import compare_run
from tunewise.report.html import build_report

ZH_REFS = ["我喜欢吃苹果。", "今天天气很好，我们去公园散步吧。", "机器学习让计算机从数据中学习规律。"]
ZH_PREDS = ["我喜欢吃香蕉。", "今天天气不错，我们去公园走走吧。", "机器学习让电脑从数据里学习规律。"]
JA_REFS = ["日本の首都は東京です。", "明日の会議は中止になりました。"]
JA_PREDS = ["日本の首都は京都です。", "明日の会議はなくなりました。"]
KO_REFS = ["나는 학교에 갑니다", "오늘 날씨가 아주 좋습니다"]
KO_PREDS = ["나는 학교로 갑니다", "오늘 날씨가 정말 좋습니다"]
EN_REFS = ["the cat sat on the mat", "machine learning learns patterns from data"]
EN_PREDS = ["the cat sat on a mat", "machine learning finds patterns in data"]


@pytest.fixture(params=[False, True], ids=["no-mecab", "mecab"])
def mecab(request, monkeypatch) -> bool:
    """Both code paths whatever is installed here: MeCab tokenizers reported present or absent."""
    monkeypatch.setattr(M, "sacrebleu_tokenizer_available", lambda name: request.param)
    return request.param


@pytest.mark.parametrize(
    "refs, language",
    [(ZH_REFS, "zh"), (JA_REFS, "ja"), (KO_REFS, "ko"), (EN_REFS, None),
     (["使用 Python 的 pandas 库读取 CSV 文件"], "zh"),  # mixed, mostly Chinese
     (["The word 你好 means hello"], None),  # mixed, mostly English
     (["東京都"], "zh")],  # no kana: Han characters, scored as Chinese (character tokens either way)
)  # fmt: skip
def test_language_of_the_references(refs, language):
    assert M.cjk_language(refs) == language


def test_bleu_on_chinese_uses_the_chinese_tokenizer():
    default = sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS]).score  # 13a: each sentence one or two "words"
    expected = sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS], tokenize="zh").score
    assert default == 0.0 and expected > 30  # the wrong score, and the right one
    assert M.bleu(ZH_PREDS, ZH_REFS) == pytest.approx(expected)
    assert M.compute_metrics(ZH_PREDS, ZH_REFS, ["bleu"])["bleu"] == pytest.approx(expected)
    sentence = [sacrebleu.sentence_bleu(p, [r], tokenize="zh").score for p, r in zip(ZH_PREDS, ZH_REFS)]
    assert M.bleu_scores(ZH_PREDS, ZH_REFS) == pytest.approx(sentence)
    stats, score = M.bleu_stats(ZH_PREDS, ZH_REFS)  # what the paired bootstrap resamples
    assert score(stats.sum(axis=0)) == pytest.approx(expected)
    assert M.bleu(ZH_PREDS, ZH_REFS, tokenize="13a") == default  # an explicit tokenizer wins


@pytest.mark.parametrize("refs, preds, language", [(JA_REFS, JA_PREDS, "ja"), (KO_REFS, KO_PREDS, "ko")])
def test_bleu_on_japanese_and_korean(refs, preds, language, mecab):
    chosen = M.bleu_tokenizer(refs)
    assert chosen == (f"{language}-mecab" if mecab else "char")
    if not mecab:
        expected = sacrebleu.corpus_bleu(preds, [refs], tokenize="char").score
        assert M.bleu(preds, refs) == pytest.approx(expected) and expected > 40
        assert sacrebleu.corpus_bleu(preds, [refs]).score < expected / 2  # 13a: whole words or phrases only
    assert M.tokenization(refs, ["bleu"])["bleu"] == f"sacrebleu {chosen}"


def test_mecab_is_used_only_when_it_can_be_built():
    for name in ("ja-mecab", "ko-mecab"):
        try:
            sacrebleu.BLEU(tokenize=name)
            works = True
        except Exception:  # noqa: BLE001 - whatever sacrebleu raises when MeCab or its dictionary is missing
            works = False
        M.sacrebleu_tokenizer_available.cache_clear()
        assert M.sacrebleu_tokenizer_available(name) is works


def test_bleu_on_english_is_unchanged():
    assert M.bleu_tokenizer(EN_REFS) == "13a"
    assert M.bleu(EN_PREDS, EN_REFS) == pytest.approx(sacrebleu.corpus_bleu(EN_PREDS, [EN_REFS]).score)


def test_chrf_plus_plus_takes_chinese_characters_as_words():
    spaced = [" ".join(t) for t in ZH_PREDS], [" ".join(t) for t in ZH_REFS]
    default = sacrebleu.corpus_chrf(ZH_PREDS, [ZH_REFS], word_order=2).score  # each sentence one "word": no word match
    expected = sacrebleu.corpus_chrf(spaced[0], [spaced[1]], word_order=2).score
    assert M.chrf(ZH_PREDS, ZH_REFS, word_order=2) == pytest.approx(expected) and expected > default + 5
    stats, score = M.chrf_stats(ZH_PREDS, ZH_REFS, word_order=2)
    assert score(stats.sum(axis=0)) == pytest.approx(expected)
    # chrF itself (character n-grams, spaces ignored) is the same either way
    assert M.chrf(ZH_PREDS, ZH_REFS) == pytest.approx(sacrebleu.corpus_chrf(ZH_PREDS, [ZH_REFS]).score)
    assert M.chrf(EN_PREDS, EN_REFS, word_order=2) == pytest.approx(sacrebleu.corpus_chrf(EN_PREDS, [EN_REFS], word_order=2).score)


def test_rouge_on_chinese_counts_characters():
    default = rouge_scorer.RougeScorer(["rougeL"]).score(ZH_REFS[1], ZH_PREDS[1])["rougeL"].fmeasure
    ours = M.rouge_scores(ZH_PREDS[1:2], ZH_REFS[1:2], rouge_type="rougeL")[0]
    assert default == 0.0 and ours > 0.6  # 13 of the 15 characters in order


def test_tokenization_record():
    names = ["exact_match", "bleu", "chrf", "rougeL", "token_f1"]
    assert M.tokenization(ZH_REFS, names) == {
        "references": "Chinese", "bleu": "sacrebleu zh", "chrf": "characters",
        "rougeL": "words, CJK characters one each", "token_f1": "words, CJK characters one each",
    }  # fmt: skip
    assert M.tokenization(ZH_REFS, ["chrf"], word_order=2)["chrf"] == "characters + words (CJK characters as words)"
    assert M.tokenization(EN_REFS, ["bleu"], tokenize="intl") == {"references": "no CJK", "bleu": "sacrebleu intl"}
    assert M.tokenization(ZH_REFS, ["exact_match", "accuracy"]) == {}


def test_eval_compare_and_report_say_which_tokenisation(tiny_dir: Path, tmp_path: Path):
    data = tmp_path / "zh.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"请重复：{r}"}, {"role": "assistant", "content": r}]} for r in ZH_REFS * 2]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--model", str(tiny_dir), "--data", str(data), "--out", str(out),
                                 "--metrics", "bleu,chrf,rougeL", "--max-new-tokens", "4"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((out / f"metrics_{tiny_dir.name}.json").read_text(encoding="utf-8"))
    assert record["tokenization"] == {"references": "Chinese", "bleu": "sacrebleu zh", "chrf": "characters",
                                      "rougeL": "words, CJK characters one each"}  # fmt: skip
    # a run directory with base and tuned predictions: compare, then the report shows the line
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    for which in ("base", "tuned"):
        shutil.copy(out / f"predictions_{tiny_dir.name}.jsonl", run / "eval" / f"predictions_{which}.jsonl")
        shutil.copy(out / f"metrics_{tiny_dir.name}.json", run / "eval" / f"metrics_{which}.json")
    compare_run(run)
    html = build_report(run).read_text(encoding="utf-8")
    assert "Tokenisation (references: Chinese): bleu sacrebleu zh · chrf characters · rougeL words, CJK characters one each" in html


def test_label_found_in_chinese_text_without_spaces():
    labels = ["人工智能", "科学", "ai"]
    assert M.first_label("这是关于人工智能的问题。", labels) == "人工智能"  # no word boundary in Chinese
    assert M.first_label("话题：科学，也和人工智能有关", labels) == "科学"
    assert M.first_label("said hi", labels) is None  # Latin labels still need whole words
    assert M.label_found_scores(["我觉得是科学类", "人工智能"], ["科学", "科学"], labels=labels) == [1.0, 0.0]
