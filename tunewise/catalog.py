"""tunewise's one catalogue of messages: English in the code, every other language in a gettext catalogue.

Messages are written in English where they are used, wrapped in :func:`_` (or :func:`ngettext` for plurals, :func:`N_`
where a table is built before the language is known); their translations live in
``tunewise/locale/<lang>/LC_MESSAGES/tunewise.po`` (the file translators edit; the compiled ``.mo`` beside it is what
Python's own :mod:`gettext` reads: no dependency at run time). ``scripts/i18n.sh`` extracts new messages into the
``.po`` and compiles it; tests/test_i18n.py fails when a message has no translation, a translation has no message, or
the ``.mo`` is older than the ``.po``.

The best-practice checklist (tunewise/checklist.py) and the dashboard (tunewise/ui/) name their words by id:
:data:`MESSAGES` maps each id to its English text, which is translated like any other message (:func:`text`).

The language: ``--lang`` (the root command's option, or a command's own), else ``$TUNEWISE_LANG``, else the system
locale when it is Chinese (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``: the order :func:`gettext.find` reads),
else English (:func:`resolve_language`). :func:`set_language` makes a choice the process's own.
"""

from __future__ import annotations

import gettext as _gettext
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

LANGUAGES = ("en", "zh")
DOMAIN = "tunewise"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
_ALIASES = {"zh-cn": "zh", "zh_cn": "zh", "cn": "zh", "chinese": "zh", "english": "en"}
_LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


def N_(message: str) -> str:
    """Marks ``message`` for the catalogue without translating it (translated where it is shown, with :func:`_`)."""
    return message


MESSAGES: dict[str, str] = {
    # --- checklist: phases, in the guide's order --------------------------------------------------------------------
    "phase.prepare": N_("Preparation"),
    "phase.data": N_("Data"),
    "phase.training": N_("Training setup"),
    "phase.monitoring": N_("Monitoring"),
    "phase.evaluation": N_("Evaluation"),
    "phase.deployment": N_("Deployment"),
    # --- checklist: the 24 items ------------------------------------------------------------------------------------
    "item.task_goal": N_("Clear task goal"),
    "item.need_finetuning": N_("Evaluate whether fine-tuning is needed"),
    "item.enough_data": N_("Enough data"),
    "item.right_method": N_("Right method"),
    "item.quality_data": N_("High-quality data collected"),
    "item.cleaned": N_("Data cleaned and preprocessed"),
    "item.split": N_("Train / validation / test split"),
    "item.augmentation": N_("Data augmentation (if needed)"),
    "item.base_model": N_("Suitable base model"),
    "item.hyperparameters": N_("Sensible hyperparameters"),
    "item.lr_schedule": N_("Learning-rate schedule"),
    "item.early_stopping": N_("Early stopping"),
    "item.train_loss": N_("Training loss watched"),
    "item.val_loss": N_("Validation loss watched"),
    "item.learning_rate": N_("Learning rate watched"),
    "item.memory": N_("Memory watched"),
    "item.test_eval": N_("Test-set evaluation"),
    "item.baseline": N_("Comparison with the baseline"),
    "item.error_analysis": N_("Error analysis"),
    "item.deployment_cost": N_("Deployment cost"),
    "item.compression": N_("Model compression"),
    "item.inference_perf": N_("Inference performance test"),
    "item.ab_test": N_("A/B test"),
    "item.live_monitoring": N_("Monitoring the live model"),
    # --- checklist: statuses ----------------------------------------------------------------------------------------
    "status.done": N_("done"),
    "status.todo": N_("not done"),
    "status.na": N_("not applicable"),
    "checklist.title": N_("Best-practice checklist"),
    "checklist.progress": N_("{done} of {total} done"),
    "checklist.flags": N_("{n} contradicted by the evidence"),
    "checklist.evidence": N_("evidence"),
    "checklist.command": N_("to do it"),
    "checklist.flag": N_("check"),
    # --- checklist: findings (what the evidence says) ---------------------------------------------------------------
    "note.task_given": N_("task {task} (decide.task in the config)"),
    "note.task_advised": N_("task {task} ({source})"),
    "note.task_missing": N_("no task named: set decide.task, or let `advise` infer it from the data"),
    "note.advised": N_("advise: {decision} ({summary})"),
    "note.no_advice": N_("no advice.json: the base model was not measured against prompting first"),
    "note.enough": N_("{n} training examples; the minimum for {task} is {minimum}"),
    "note.no_data": N_("the data is not prepared yet"),
    "note.method_matches": N_("method {method}, as advised"),
    "note.method_unadvised": N_("method {method} chosen without advice"),
    "note.quality": N_("{kept} of {read} rows kept ({share} rejected)"),
    "note.cleaned": N_("{rejected} rows rejected with reasons ({reasons}); exact dedup {dedup}, near dedup {near}"),
    "note.not_cleaned": N_("deduplication is off (data.dedup: false)"),
    "note.split": N_("train {train} / val {val} / test {test}; overlap between splits removed: {removed}"),
    "note.no_test": N_("no test split: nothing held out to evaluate on"),
    "note.augmented": N_("{n} augmented training rows"),
    "note.augment_not_needed": N_("not needed: {n} training examples (at least {minimum} for {task})"),
    "note.augment_needed": N_("only {n} training examples for {task} (minimum {minimum}) and no augmentation"),
    "note.estimate": N_("{model}: estimated peak {peak_gb} GB of {available_gb} GB available"),
    "note.no_estimate": N_("no estimate.json: memory and time not checked before training"),
    "note.hyper": N_("lr {lr}, batch {batch}; train loss {first} -> {last}"),
    "note.not_trained": N_("not trained yet"),
    "note.schedule": N_("{scheduler} schedule, warmup {warmup}; lr logged {lo} .. {hi}"),
    "note.schedule_constant": N_("constant learning rate without warmup"),
    "note.early_stopping": N_("{how}"),
    "note.no_early_stopping":
        N_("no early stopping (training.early_stopping_patience and monitor.early_stopping unset)"),
    "note.no_val_for_stopping": N_("no validation split: early stopping has nothing to watch"),
    "note.train_loss": N_("{n} train records, loss {first} -> {last}"),
    "note.val_loss": N_("{n} evaluations, best eval loss {best} at step {step}"),
    "note.no_val": N_("no validation split"),
    "note.no_evals": N_("no evaluation logged"),
    "note.lr_logged": N_("{n} learning-rate values logged"),
    "note.memory": N_("peak {mb} MiB ({field})"),
    "note.no_metrics": N_("no metrics.jsonl"),
    "note.test_eval": N_("{models} scored on {n} test examples"),
    "note.no_test_eval": N_("the tuned model is not evaluated on the test split"),
    "note.baseline": N_("{metric}: {base} -> {tuned}, delta {delta} (95% CI {lo} .. {hi})"),
    "note.no_comparison": N_("no comparison with the base model"),
    "note.errors": N_("{errors} of {n} test examples not perfect on {metric}"),
    "note.no_errors": N_("no error analysis of the tuned model"),
    "note.cost": N_("{variant}: {weights} MiB of weights, peak {peak} MiB, {tps} tokens/s at batch {batch}"),
    "note.no_bench": N_("not benchmarked"),
    "note.compressed": N_("exported: {what}"),
    "note.not_compressed": N_("no merged or quantized export"),
    "note.perf": N_("{variants}: TTFT p50 {ttft} ms, per token p50 {per_token} ms"),
    "note.ab": N_("{variants}; control {control}"),
    "note.no_ab": N_("no A/B summary (serve the run, then `tunewise abtest`)"),
    "note.feedback": N_("{n} feedback records, {errors} error records in the serve logs"),
    "note.no_feedback": N_("no feedback from the served model"),
    # --- checklist: flags (the evidence contradicts the item) -------------------------------------------------------
    "flag.prompting_enough": N_("advise said prompting reaches the target, yet the run fine-tunes"),
    "flag.method_differs": N_("advise chose {decision}, the run trains {method}"),
    "flag.too_few": N_("{n} training examples, below the {minimum} advised for {task}"),
    "flag.many_rejected": N_("{share} of the rows were rejected: check data/rejects.jsonl"),
    "flag.test_overlaps_train": N_("test split overlaps train: {n} examples"),
    "flag.estimate_over": N_("the estimated peak memory is above what is available"),
    "flag.loss_not_falling": N_("train loss did not fall ({first} -> {last})"),
    "flag.guard_warnings": N_("{n} guard warning(s): {events}"),
    "flag.val_rising": N_("validation loss rising for the last {n} evaluations"),
    "flag.not_better": N_("the tuned model is not significantly better than the base on {metric}"),
    "flag.worse": N_("the tuned model is significantly worse than the base on {metric}"),
    "flag.ab_worse": N_("{variant} is significantly worse than the control on {metric}"),
    # --- dashboard labels -------------------------------------------------------------------------------------------
    "ui.runs": N_("Runs"),
    "ui.compare": N_("Compare"),
    "ui.playground": N_("Playground"),
    "ui.new_run": N_("New run"),
    "ui.status": N_("status"),
    "ui.method": N_("method"),
    "ui.model": N_("model"),
    "ui.name": N_("name"),
    "ui.best_eval_loss": N_("best eval loss"),
    "ui.main_metric": N_("main metric"),
    "ui.checklist": N_("checklist"),
    "ui.all": N_("all"),
    "ui.filter": N_("filter"),
    "ui.curves": N_("Curves"),
    "ui.warnings": N_("Guard warnings"),
    "ui.no_warnings": N_("no warnings"),
    "ui.report": N_("Report"),
    "ui.cancel": N_("Cancel"),
    "ui.resume": N_("Resume"),
    "ui.metrics": N_("Metrics"),
    "ui.prompt": N_("Prompt"),
    "ui.send": N_("Send"),
    "ui.config": N_("Config"),
    "ui.validate": N_("Check"),
    "ui.estimate": N_("Estimate"),
    "ui.start": N_("Start"),
    "ui.valid": N_("valid"),
    "ui.points": N_("points"),
}


def _locale_language() -> str:
    """zh when the system locale is Chinese (zh_CN.UTF-8, zh_TW, zh...), else en; C/POSIX and unset are English."""
    for variable in _LOCALE_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value:
            first = value.split(":")[0].lower()  # LANGUAGE is a list: zh_CN:en
            return "zh" if first.startswith("zh") else "en"
    return "en"


def resolve_language(lang: str | None = None) -> str:
    """``lang`` if given, else $TUNEWISE_LANG, else the locale's language when it is one of :data:`LANGUAGES`, else
    English; an unknown ``lang`` or $TUNEWISE_LANG is a ValueError naming the choices."""
    chosen = (lang or os.environ.get("TUNEWISE_LANG") or _locale_language()).strip().lower()
    chosen = _ALIASES.get(chosen, chosen)
    if chosen not in LANGUAGES:
        # always in English: the language asked for is the one not understood
        raise ValueError(f"language {lang or chosen!r} is not available; choose one of {', '.join(LANGUAGES)}")
    return chosen


_current: str | None = None


def set_language(lang: str | None) -> str:
    """Make ``lang`` (resolved as :func:`resolve_language` does) the language of every later message; returns it."""
    global _current
    _current = resolve_language(lang)
    return _current


def current_language() -> str:
    """The language messages are shown in: the one set, else the environment's as it is now (English when it names
    none known)."""
    if _current is not None:
        return _current
    try:
        return resolve_language(None)
    except ValueError:  # a bad $TUNEWISE_LANG: the CLI says so; a library message must not fail over it
        return "en"


@contextmanager
def speaking(lang: str | None) -> Iterator[str]:
    """Within the block, messages are in ``lang`` (resolved as :func:`resolve_language` does); yields it."""
    global _current
    before, _current = _current, resolve_language(lang)
    try:
        yield _current
    finally:
        _current = before


@lru_cache(maxsize=None)
def translations(lang: str) -> _gettext.NullTranslations:
    """The catalogue of ``lang``: English is the messages themselves; another language's compiled .mo must exist."""
    if lang == "en":
        return _gettext.NullTranslations()
    return _gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang])


def _(message: str) -> str:
    """``message`` in the current language."""
    return translations(current_language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """``singular`` or ``plural`` by ``n``, in the current language."""
    return translations(current_language()).ngettext(singular, plural, n)


def translate(message: str, lang: str | None = None) -> str:
    """``message`` in ``lang`` (default: the current language)."""
    return translations(lang or current_language()).gettext(message)


def text(key: str, lang: str | None = None, **params: object) -> str:
    """The message ``key`` of :data:`MESSAGES` in ``lang`` (default: the current language), ``{fields}`` filled."""
    template = translate(MESSAGES[key], lang)
    return template.format(**params) if params else template


def messages(lang: str, prefix: str = "") -> dict[str, str]:
    """Every message of :data:`MESSAGES` whose id starts with ``prefix``, in ``lang`` (what the dashboard is given)."""
    return {key: translate(english, lang) for key, english in MESSAGES.items() if key.startswith(prefix)}
