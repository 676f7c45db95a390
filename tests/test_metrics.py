"""Metric functions checked against hand-computed values and the reference libraries' own numbers."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer, tokenizers

from tunewise import metrics as M

EN_REFS = [
    "The cat sat on the mat.",
    "It's a sunny day in New York, isn't it?",
    "Machine translation evaluation is hard_to do well in 2024.",
    "Running runners ran quickly.",
]
EN_PREDS = [
    "The cat is sitting on the mat.",
    "It is a sunny day in new york!",
    "Evaluating machine translation well is hard in 2024",
    "The runner runs quickly",
]


# --------------------------------------------------------------------------- normalize


def test_normalize_defaults_and_each_option():
    text = "  The  Cat, sat!  "
    assert M.normalize(text) == "the cat sat"
    assert M.normalize(text, lower=False) == "The Cat sat"
    assert M.normalize(text, punctuation=False) == "the cat, sat!"
    assert M.normalize(text, whitespace=False) == "the  cat sat"
    assert M.normalize(text, strip=False, whitespace=False) == "  the  cat sat  "
    assert M.normalize(text, articles=True) == "cat sat"
    assert M.normalize("The answer", lower=False, articles=True) == "answer"


def test_normalize_unicode_punctuation():
    assert M.normalize("你好，世界！「测试」。") == "你好世界测试"
    assert M.normalize("＄100 ＋ €5…") == "100 €5"  # full-width ASCII symbols go, the euro sign (a currency letter) stays
    assert M.normalize("¿Qué tal?") == "qué tal"


# --------------------------------------------------------------------------- exact match / accuracy


def test_exact_match_only_strips_by_default():
    assert M.exact_match_scores([" Paris\n", "paris", "Paris."], ["Paris"] * 3) == [1.0, 0.0, 0.0]
    assert M.exact_match([" Paris\n", "paris"], ["Paris", "Paris"]) == 0.5
    assert M.exact_match(["paris"], ["Paris"], lower=True) == 1.0


def test_accuracy_normalises_fully():
    assert M.accuracy_scores([" Paris.", "PARIS", "the Paris", "Lyon"], ["paris"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert M.accuracy(["Yes!", "no"], ["yes", "No."]) == 1.0
    assert M.accuracy(["the Paris"], ["paris"], articles=True) == 1.0


def test_mismatched_lengths_and_empty_input_are_errors():
    with pytest.raises(ValueError, match="pair up"):
        M.exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="zero examples"):
        M.accuracy([], [])


# --------------------------------------------------------------------------- token F1


def test_token_f1_hand_computed():
    assert M.token_f1_scores(["The cat sat on the mat."], ["a cat sat on a mat"]) == [1.0]
    # pred {cat, sat} vs ref {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert M.token_f1_scores(["cat sat"], ["the cat sat down"]) == [pytest.approx(0.8)]
    # bag overlap: x:min(2,1) + y:min(1,2) = 2 of 3 on each side
    assert M.token_f1_scores(["x x y"], ["x y y"]) == [pytest.approx(2 / 3)]
    assert M.token_f1_scores(["dog"], ["cat"]) == [0.0]
    assert M.token_f1_scores(["", "the", "x"], ["", "a", ""]) == [1.0, 1.0, 0.0]  # empty vs empty matches
    assert M.token_f1(["cat sat", "dog"], ["the cat sat down", "dog"]) == pytest.approx(0.9)


def test_token_f1_chinese_per_character():
    assert M.f1_tokens("我喜欢iphone 手机") == ["我", "喜", "欢", "iphone", "手", "机"]
    # 我 喜 欢 shared, 猫 vs 狗 not: P = R = 3/4
    assert M.token_f1_scores(["我喜欢猫"], ["我喜欢狗。"]) == [pytest.approx(0.75)]


# --------------------------------------------------------------------------- BLEU / chrF


def test_bleu_and_chrf_match_sacrebleu():
    assert M.bleu(EN_PREDS, EN_REFS) == pytest.approx(sacrebleu.corpus_bleu(EN_PREDS, [EN_REFS]).score)
    assert M.chrf(EN_PREDS, EN_REFS) == pytest.approx(sacrebleu.corpus_chrf(EN_PREDS, [EN_REFS]).score)
    assert M.chrf(EN_PREDS, EN_REFS, word_order=2) == pytest.approx(
        sacrebleu.corpus_chrf(EN_PREDS, [EN_REFS], word_order=2).score
    )
    expected = [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(EN_PREDS, EN_REFS)]
    assert M.bleu_scores(EN_PREDS, EN_REFS) == pytest.approx(expected)
    expected = [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(EN_PREDS, EN_REFS)]
    assert M.chrf_scores(EN_PREDS, EN_REFS) == pytest.approx(expected)


def test_bleu_chinese_tokenizer():
    refs, preds = ["我喜欢吃苹果。", "今天天气很好"], ["我喜欢吃香蕉。", "今天天气不错"]
    zh = M.bleu(preds, refs, tokenize="zh")
    assert zh == pytest.approx(sacrebleu.corpus_bleu(preds, [refs], tokenize="zh").score)
    assert zh > M.bleu(preds, refs, tokenize="13a")  # 13a sees each Chinese sentence as one word: no matches at all
    assert M.compute_metrics(preds, refs, ["bleu"], tokenize="zh")["bleu"] == pytest.approx(zh)


@pytest.mark.parametrize("name", ["bleu", "chrf"])
def test_sufficient_statistics_reproduce_corpus_score(name):
    metric = M.METRICS[name]
    stats, score_fn = metric.stats(EN_PREDS, EN_REFS)
    assert stats.shape[0] == len(EN_PREDS)
    assert score_fn(stats.sum(axis=0)) == pytest.approx(metric.corpus(EN_PREDS, EN_REFS))
    assert score_fn(stats[:2].sum(axis=0)) == pytest.approx(metric.corpus(EN_PREDS[:2], EN_REFS[:2]))


# --------------------------------------------------------------------------- ROUGE


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_tokenizer_equals_default_on_english(use_stemmer):
    default = tokenizers.DefaultTokenizer(use_stemmer=use_stemmer)
    ours = M.UnicodeRougeTokenizer(use_stemmer=use_stemmer)
    for text in EN_REFS + EN_PREDS + ["  under_score--dash 3.14 A-B ", "", "!!!"]:
        assert ours.tokenize(text) == default.tokenize(text)
    scorer = rouge_scorer.RougeScorer(list(M.ROUGE_TYPES), use_stemmer=use_stemmer)
    for rouge_type in M.ROUGE_TYPES:
        expected = [scorer.score(r, p)[rouge_type].fmeasure for p, r in zip(EN_PREDS, EN_REFS)]
        got = M.rouge_scores(EN_PREDS, EN_REFS, rouge_type=rouge_type, use_stemmer=use_stemmer)
        assert got == pytest.approx(expected)


def test_rouge_chinese_by_hand():
    assert M.UnicodeRougeTokenizer().tokenize("我喜欢猫，Café！") == ["我", "喜", "欢", "猫", "café"]
    # ref 我 喜 欢 狗 / pred 我 喜 欢 猫: unigrams 3/4; bigrams {我喜, 喜欢} of 3; LCS 3 of 4
    result = M.rouge(["我喜欢猫"], ["我喜欢狗"])
    assert result == pytest.approx({"rouge1": 0.75, "rouge2": 2 / 3, "rougeL": 0.75})
    default = rouge_scorer.RougeScorer(["rouge1"]).score("我喜欢狗", "我喜欢猫")["rouge1"].fmeasure
    assert default == 0.0  # the reason for the custom tokenizer


# --------------------------------------------------------------------------- classification report


def test_classification_report_by_hand():
    refs = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a ", "b", "b", "c", "x"]
    rep = M.classification_report(preds, refs)
    assert rep["labels"] == ["a", "b", "c"]
    pc = rep["per_class"]
    assert pc["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert pc["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})
    assert rep["accuracy"] == pytest.approx(0.5)
    assert rep["micro"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})  # = accuracy
    assert rep["macro"] == pytest.approx({"precision": 0.5, "recall": 7 / 18, "f1": 1.3 / 3})
    assert rep["weighted"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5) / 6)
    assert rep["confusion_matrix"] == {
        "rows": ["a", "b", "c"],
        "columns": ["a", "b", "c", "(other)"],
        "matrix": [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]],
    }


def test_classification_report_label_order_and_errors():
    rep = M.classification_report(["no", "yes"], ["yes", "yes"], labels=["yes", "no"])
    assert rep["confusion_matrix"]["matrix"] == [[1, 1, 0], [0, 0, 0]]
    assert rep["per_class"]["no"]["support"] == 0
    assert rep["micro"]["f1"] == rep["accuracy"] == 0.5
    with pytest.raises(ValueError, match="not in labels"):
        M.classification_report(["a"], ["b"], labels=["a"])


# --------------------------------------------------------------------------- JSON


def test_json_valid():
    preds = ['{"a": 1}', '```json\n{"a": [1, 2]}\n```', "```\n[1, 2]\n```", " 3 ",
             'Here it is: {"a": 1}', '{"a": NaN}', "{'a': 1}", ""]
    assert M.json_valid_scores(preds) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_json_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    preds = ['{"a": 1}', '```json\n{"a": 2, "b": "x"}\n```', '{"a": "1"}', "{}", "not json"]
    assert M.json_schema_scores(preds, schema) == [1.0, 1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="invalid JSON schema"):
        M.json_schema_scores(preds, {"type": 5})


# --------------------------------------------------------------------------- registry and entry points


def test_registry_entry_points():
    assert {"exact_match", "accuracy", "token_f1", "bleu", "chrf", "rouge1", "rouge2", "rougeL",
            "json_valid", "json_schema"} <= set(M.METRICS)
    assert M.METRICS["bleu"].corpus_level and not M.METRICS["token_f1"].corpus_level
    assert all(m.higher_is_better for m in M.METRICS.values())
    preds, refs = ["Paris", "the cat sat"], ["paris", "cat sat down"]
    got = M.compute_metrics(preds, refs, ["exact_match", "accuracy", "token_f1", "bleu"])
    assert got["exact_match"] == 0.0 and got["accuracy"] == 0.5
    assert got["token_f1"] == pytest.approx((1.0 + 0.8) / 2)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    per = M.per_example_scores(preds, refs, ["accuracy", "token_f1"], lower=False)
    assert per == {"accuracy": [0.0, 0.0], "token_f1": [0.0, pytest.approx(0.8)]}


def test_entry_point_errors_and_reference_free_metrics():
    with pytest.raises(ValueError, match="unknown metric"):
        M.compute_metrics(["a"], ["a"], ["bleurt"])
    with pytest.raises(ValueError, match="not taken"):
        M.compute_metrics(["a"], ["a"], ["accuracy"], tokenize="zh")
    with pytest.raises(ValueError, match="needs the option"):
        M.compute_metrics(["{}"], None, ["json_schema"])
    with pytest.raises(ValueError, match="needs references"):
        M.compute_metrics(["a"], None, ["accuracy"])
    got = M.compute_metrics(['{"a": 1}', "x"], None, ["json_valid", "json_schema"], schema={"type": "object"})
    assert got == {"json_valid": 0.5, "json_schema": 0.5}
