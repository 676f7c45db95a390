"""Should this be fine-tuned at all, and how? Prompting, LoRA, QLoRA or full fine-tuning, decided by listed rules
over measured inputs: the base model's zero-/few-shot score on a validation sample, the usable examples after
preparation, the task type and output format (inferred from the data unless given), the memory estimates of each
method against the memory actually available, and the budget. Every rule is reported, fired or not.

The result is written to RUN/advice.json.
"""

from __future__ import annotations

import logging
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from tunewise.catalog import _
from tunewise.config import TASKS, Config, DecideConfig
from tunewise.errors import DataError
from tunewise.example import Example

log = logging.getLogger(__name__)

MIN_EXAMPLES = {"classification": 100, "extraction": 200, "summarisation": 500, "generation": 500, "code": 1000,
                "domain-specific": 1000}
"""Usable training examples below which fine-tuning is not advised (tunewise's rule of thumb, stated in the output)."""
MIN_PER_LABEL = 10  # classification: average training examples per label
RARE_LABEL = 5  # labels with fewer training examples are reported
FULL_MIN_EXAMPLES = 10_000
"""Below this many examples adapters match full fine-tuning at a fraction of the memory; full is not advised."""
TARGET = DecideConfig.model_fields["target"].default  # prompting is enough when its best measured score reaches this
MEMORY_HEADROOM = 0.9  # a method fits when its estimated peak is within this share of the available memory

Progress = Callable[[str], None]


@dataclass
class Rule:
    id: str
    description: str
    fired: bool
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TaskInfo:
    task: str
    source: str  # "given" or "inferred: ..."
    labels: list[str] | None = None
    json_answers: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------------
# inputs inferred from the data


def _user_text(example: Example) -> str:
    return next((str(m.get("content") or "") for m in reversed(example.prompt_messages) if m.get("role") == "user"), "")


_CODE = re.compile(r"```|^\s*(def |class |import |from \S+ import |#include|function |public |return |SELECT |for \(|if \()",
                   re.MULTILINE)


def infer_task(train: Sequence[Example]) -> TaskInfo:
    """The task type from the training answers: short label-like answers from a small set -> classification; JSON
    answers -> extraction; code-looking answers -> code; long inputs condensed -> summarisation; answers copied out of
    the input -> extraction; anything else -> generation."""
    from tunewise.metrics import detect_labels, parse_json_prediction

    rows = [e for e in train if e.reference is not None]
    refs = [(e.reference or "").strip() for e in rows]
    prompts = [_user_text(e) for e in rows]
    if not refs:
        raise ValueError(_("the training split has no assistant answers: advise compares prompting with "
                           "fine-tuning on question -> answer data (chat, alpaca, ...); plain text for "
                           "continued pretraining has no answers to prompt for"))
    labels = detect_labels(refs)
    if labels is not None:
        return TaskInfo("classification", _("inferred: {n_labels} distinct short answers").format(
            n_labels=len(labels)), labels=labels,
                        evidence={"labels": len(labels)})

    def parses(text: str) -> bool:
        try:
            return isinstance(parse_json_prediction(text), (dict, list))
        except ValueError:
            return False

    n = len(refs)
    json_share = sum(parses(r) for r in refs) / n
    code_share = sum(bool(_CODE.search(r)) for r in refs) / n
    copied = sum(bool(r) and r.lower() in p.lower() for r, p in zip(refs, prompts)) / n
    prompt_words = statistics.mean(len(p.split()) for p in prompts)
    answer_words = statistics.mean(len(r.split()) for r in refs)
    overlap = statistics.mean(
        len({w.lower() for w in r.split()} & {w.lower() for w in p.split()}) / max(len(set(r.split())), 1)
        for r, p in zip(refs, prompts)
    )
    evidence = {"json_answers": round(json_share, 3), "code_answers": round(code_share, 3),
                "answers_copied_from_input": round(copied, 3), "mean_prompt_words": round(prompt_words, 1),
                "mean_answer_words": round(answer_words, 1), "answer_words_in_input": round(overlap, 3)}
    if json_share >= 0.8:
        return TaskInfo("extraction", _("inferred: {json_share:.0%} of answers are JSON").format(
            json_share=json_share), json_answers=True, evidence=evidence)
    if code_share >= 0.5:
        return TaskInfo("code", _("inferred: {code_share:.0%} of answers look like code").format(
            code_share=code_share), evidence=evidence)
    if prompt_words >= 80 and answer_words <= 0.5 * prompt_words and overlap >= 0.5:
        return TaskInfo("summarisation", _("inferred: answers are {ratio:.0%} of the input's length and reuse "
                                           "{overlap:.0%} of its words").format(
                            ratio=answer_words / prompt_words, overlap=overlap), evidence=evidence)
    if copied >= 0.6:
        return TaskInfo("extraction", _("inferred: {copied:.0%} of answers are copied from the input").format(
            copied=copied), evidence=evidence)
    return TaskInfo("generation", _("inferred: free-form answers"), evidence=evidence)


def infer_strict_format(task: TaskInfo) -> bool:
    """Outputs must follow a strict format when they are labels or JSON."""
    return task.task == "classification" or task.json_answers


# --------------------------------------------------------------------------------------------------------------------
# the decision


class Decision(NamedTuple):
    """What :func:`decide` returns."""

    decision: str  # prompting | full | lora | qlora
    gradient_checkpointing: bool
    reasons: list[str]
    not_chosen: dict[str, str]
    rules: list[Rule]
    sharding: str | None = None  # "fsdp" when the method fits only sharded over decide.devices


@dataclass
class Advice:
    decision: str  # prompting | full | lora | qlora
    gradient_checkpointing: bool
    summary: str
    reasons: list[str]
    not_chosen: dict[str, str]
    rules: list[Rule]
    inputs: dict[str, Any]
    baselines: dict[str, Any]
    estimates: dict[str, Any]
    sharding: str | None = None  # training.sharding to train with (over ``devices``), when one device is too small
    devices: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "gradient_checkpointing": self.gradient_checkpointing,
            "sharding": self.sharding,
            "devices": self.devices,
            "summary": self.summary,
            "reasons": self.reasons,
            "not_chosen": self.not_chosen,
            "rules": [r.to_dict() for r in self.rules],
            "inputs": self.inputs,
            "baselines": self.baselines,
            "estimates": self.estimates,
        }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def best_prompting(baselines: dict[str, Any], metric: str) -> tuple[str | None, float | None]:
    """(variant, score) of the best measured prompting variant on ``metric``."""
    scores = {name: b["metrics"].get(metric) for name, b in baselines.get("variants", {}).items()}
    scores = {k: v for k, v in scores.items() if v is not None}
    if not scores:
        return None, None
    name = max(scores, key=lambda k: scores[k])
    return name, scores[name]


def decide(
    *,
    task: TaskInfo,
    strict_format: bool,
    examples: int,
    metric: str,
    baselines: dict[str, Any],
    estimates: dict[str, Any],
    available_mb: float,
    budget_hours: float | None = None,
    budget_usd: float | None = None,
    target: float = TARGET,
    qlora_check: dict[str, Any] | None = None,
    devices: int = 1,
) -> Decision:
    """Apply the rules. Returns the decision, gradient checkpointing, reasons, why each other option was not chosen,
    the rules, and the sharding a method needs when it fits only sharded over ``devices`` (the estimates'
    per-device memory with ``training.sharding: fsdp``). ``qlora_check``: the quantized-training check run on this
    machine (tunewise/train/verify_quantized.py), when QLoRA was a candidate; QLoRA is never chosen where it failed."""
    rules: list[Rule] = []
    limit = available_mb * MEMORY_HEADROOM
    variant, best = best_prompting(baselines, metric)
    variants = baselines.get("variants", {})
    lenient = max((v["metrics"].get("label_found", -1.0) for v in variants.values()), default=-1.0)

    prompting_ok = best is not None and best >= target
    measured = ", ".join(f"{name} {_pct(v['metrics'].get(metric))}" for name, v in variants.items()) or _("nothing")
    rules.append(Rule("prompting_reaches_target", _("the base model's best prompting score on {metric} reaches the target "
                                                    "{target:.0%}").format(metric=metric, target=target), prompting_ok,
                      _("measured: {measured} on {n} rows").format(measured=measured, n=baselines.get("n", 0))))
    minimum = MIN_EXAMPLES[task.task]
    enough = examples >= minimum
    evidence = _("{examples} usable training examples; the minimum for {task} is {minimum}").format(
        examples=examples, task=task.task, minimum=minimum)
    if task.task == "classification" and task.labels:
        per_label = examples / len(task.labels)
        enough = enough and per_label >= MIN_PER_LABEL
        evidence += _("; {per_label:.1f} per label on average (minimum {minimum})").format(
            per_label=per_label, minimum=MIN_PER_LABEL)
    rules.append(Rule("enough_data", _("enough usable examples for {task}").format(task=task.task), enough, evidence))
    rare = baselines.get("rare_labels") or []
    if task.task == "classification":
        rules.append(Rule("rare_labels", _("some labels have fewer than {n} training examples (expect them to "
                                           "be weak)").format(n=RARE_LABEL),
                          bool(rare), ", ".join(rare) if rare else _("every label has enough examples")))
    format_gap = strict_format and best is not None and (best < 0.5 or (lenient >= 0 and lenient - best >= 0.1))
    rules.append(Rule("strict_format_gap", _("outputs must follow a strict format that prompting does not hold "
                                             "(fine-tuning teaches the format)"), format_gap,
                      _("strict format: {strict}; best strict score {best}").format(
                          strict=_("yes") if strict_format else _("no"), best=_pct(best))
                      + (_(", lenient (label found) {lenient}").format(lenient=_pct(lenient)) if lenient >= 0 else "")))

    def peak(method: str, ckpt: bool) -> float | None:
        e = estimates.get(method)
        if e is None:
            return None
        return e["memory"]["peak_mb_with_checkpointing" if ckpt else "peak_mb_without_checkpointing"]

    def sharded_peak(method: str, ckpt: bool) -> float | None:
        shard = (estimates.get(method) or {}).get("sharding")
        if devices <= 1 or not shard or shard["devices"] != devices:
            return None
        return shard["engines"]["fsdp"]["peak_mb_with_checkpointing" if ckpt else "peak_mb_without_checkpointing"]

    fits: dict[str, tuple[bool, bool]] = {}
    for method in ("full", "lora", "qlora"):
        plain, ckpt = peak(method, False), peak(method, True)
        if plain is None:
            continue
        fits[method] = (plain <= limit, ckpt is not None and ckpt <= limit)
        rules.append(Rule(f"{method}_fits_memory", _("{method}'s estimated peak fits in {share:.0%} of the "
                                                     "available memory").format(
                                                         method=method, share=MEMORY_HEADROOM), fits[method][0] or fits[method][1],
                          _("{plain:,.0f} MB ({ckpt:,.0f} MB with gradient checkpointing) of "
                            "{available_mb:,.0f} MB available").format(
                                plain=plain, ckpt=ckpt, available_mb=available_mb)))
    shard_fits: dict[str, tuple[bool, bool]] = {}
    for method in fits:
        plain, ckpt = sharded_peak(method, False), sharded_peak(method, True)
        if plain is not None and ckpt is not None:
            shard_fits[method] = (plain <= limit, ckpt <= limit)
    needs_sharding = [m for m in fits if not any(fits[m]) and any(shard_fits.get(m, (False, False)))]
    rules.append(Rule("sharding_fits_memory", _("a method too large for one device fits each of {devices} devices "
                                                "sharded with FSDP (training.sharding: fsdp)").format(
                                                    devices=devices), bool(needs_sharding),
                      "; ".join(_("{method}: {plain:,.0f} MB per device ({ckpt:,.0f} MB with gradient checkpointing)").format(
                                method=m, plain=sharded_peak(m, False), ckpt=sharded_peak(m, True)) for m in shard_fits)
                      or (_("{devices} device(s): give decide.devices N (or --devices N) to weigh sharding").format(
                          devices=devices)
                          if devices <= 1 else _("no sharded estimate"))))
    full_data = examples >= FULL_MIN_EXAMPLES
    rules.append(Rule("full_needs_large_data", _("full fine-tuning is worth its memory with {minimum:,}+ "
                                                 "examples").format(minimum=FULL_MIN_EXAMPLES),
                      full_data, _("{examples:,} examples").format(examples=examples)))
    lora_fits = fits.get("lora", (False, False))
    qlora_only = "qlora" in fits and not any(lora_fits) and any(fits["qlora"])
    rules.append(Rule("qlora_only_when_lora_does_not_fit", _("QLoRA when LoRA does not fit: a quantized base is slower (weights "
                                                             "are dequantized every step) and gains nothing on quality"), qlora_only,
                      _("LoRA {lora}; QLoRA {qlora}").format(
                          lora=_("fits") if any(lora_fits) else _("does not fit"),
                          qlora=_("fits") if any(fits.get("qlora", (False, False))) else _("does not fit"))))

    qlora_broken = qlora_check is not None and not qlora_check["ok"]
    if qlora_check is not None:
        rules.append(Rule("qlora_trains_correctly", _("QLoRA's gradients through the quantized base match the dequantized "
                                                      "base on this machine"), not qlora_broken,
                          _("cosine {cosine:.4f}, norm ratio {norm_ratio:.3f} ({path})").format(
                              cosine=qlora_check['cosine'], norm_ratio=qlora_check['norm_ratio'], path=qlora_check['path'])))

    def within_budget(method: str) -> tuple[bool, str]:
        e = estimates[method]
        hours = e["cost"]["device_hours"]
        money = e["cost"].get("device_cost", e["cost"].get("api_cost"))
        ok = (budget_hours is None or hours <= budget_hours) and (budget_usd is None or money is None or money <= budget_usd)
        text = _("{minutes:.1f} min").format(minutes=hours * 60) + (f", {money:.2f} USD" if money is not None else "")
        limits = [_("{hours} h").format(hours=budget_hours) if budget_hours is not None else None,
                  f"{budget_usd} USD" if budget_usd is not None else None]
        return ok, text + (_(" (budget {limits})").format(limits=" / ".join(x for x in limits if x)) if any(limits)
                           else _(" (no budget given)"))

    reasons: list[str] = []
    not_chosen: dict[str, str] = {}
    decision, ckpt, sharding = "prompting", False, None
    if prompting_ok:
        reasons.append(_("prompting already reaches {best} {metric} ({variant}), above the target {target:.0%}").format(
            best=_pct(best), metric=metric, variant=variant, target=target))
    elif not enough:
        reasons.append(_("too little data to fine-tune: {evidence}; collect more, and prompt (few-shot) "
                         "meanwhile").format(evidence=evidence))
    else:
        reasons.append(_("prompting reaches only {best} {metric} ({measured}), below the target {target:.0%}").format(
            best=_pct(best), metric=metric, measured=variant or _("not measured"), target=target))
        order = (["full"] if full_data else []) + ["lora", "qlora"]
        for method in order:
            if method not in fits:
                continue
            plain_fits, ckpt_fits = fits[method]
            ok, budget_text = within_budget(method)
            if not (plain_fits or ckpt_fits) and method in needs_sharding and ok:
                shard_plain, _shard_ckpt = shard_fits[method]
                decision, ckpt, sharding = method, not shard_plain, "fsdp"
                reasons.append(_("{method} does not fit one device ({peak:,.0f} MB even with gradient "
                                 "checkpointing) but fits each of {devices} devices sharded with "
                                 "training.sharding: fsdp: {sharded:,.0f} MB per device").format(
                    method=method, peak=peak(method, True), devices=devices, sharded=sharded_peak(method, ckpt))
                               + (_(" with gradient checkpointing") if ckpt else ""))
                reasons.append(_("estimated training time {budget_text} (one device's)").format(
                    budget_text=budget_text))
                break
            if not (plain_fits or ckpt_fits):
                sharded_text = (f", and {sharded_peak(method, True):,.0f} MB per device sharded over {devices}"
                                if method in shard_fits else "")
                not_chosen[method] = _("does not fit: estimated peak {peak:,.0f} MB even with gradient "
                                       "checkpointing{sharded_text}, {limit:,.0f} MB usable").format(
                    peak=peak(method, True), sharded_text=sharded_text, limit=limit)
                continue
            if not ok:
                not_chosen[method] = _("over budget: {budget_text}").format(budget_text=budget_text)
                continue
            if method == "qlora" and any(lora_fits):
                not_chosen[method] = _("LoRA fits: QLoRA would only add dequantization time")
                continue
            if method == "qlora" and qlora_broken:
                not_chosen[method] = _("trains wrongly on this machine: {message}").format(
                    message=qlora_check['message'])  # type: ignore[index]
                continue
            decision, ckpt = method, not plain_fits
            reasons.append(_("{method} fits: estimated peak {ckpt:,.0f} MB of {available_mb:,.0f} MB").format(
                method=method, ckpt=peak(method, ckpt), available_mb=available_mb)
                           + (_(" with gradient checkpointing") if ckpt else ""))
            reasons.append(_("estimated training time {budget_text}").format(budget_text=budget_text))
            break
        if decision == "prompting":
            reasons.append(_("no fine-tuning method fits the memory and budget; prompt, or lower the batch size "
                             "/ sequence length, or use a smaller model")
                           + (_(", or shard over several devices (decide.devices N shows the per-device memory; "
                                "docs/scale.md)") if devices <= 1 else ""))
        if format_gap:
            reasons.append(_("the output format must be exact and prompting does not hold it: fine-tuning "
                             "teaches it"))
    for method in ("full", "lora", "qlora"):
        if method == decision or method in not_chosen or method not in fits:
            continue
        if prompting_ok:
            not_chosen[method] = _("not needed: prompting reaches the target")
        elif not enough:
            not_chosen[method] = _("not enough data yet")
        elif method == "full" and not full_data:
            not_chosen[method] = _("only {examples:,} examples: adapters match full fine-tuning below "
                                   "{minimum:,}, at {full_mb:,.0f} MB instead of {lora_mb:,.0f} MB").format(
                examples=examples, minimum=FULL_MIN_EXAMPLES, full_mb=peak("full", False), lora_mb=peak("lora", False) or 0)
        elif method == "qlora":
            not_chosen[method] = (_("LoRA fits") + (_(" sharded over {devices} devices").format(
                devices=devices) if sharding else "")
                                  + _(": QLoRA would only add dequantization time"))
        elif decision != "prompting":
            not_chosen[method] = _("{decision} is preferred").format(decision=decision)
    if decision != "prompting":
        not_chosen.setdefault("prompting", _("best measured prompting score {best} {metric} is below the target "
                                             "{target:.0%}").format(best=_pct(best), metric=metric, target=target))
    return Decision(decision, ckpt, reasons, not_chosen, rules, sharding)


# --------------------------------------------------------------------------------------------------------------------
# the whole stage


def advise_run(
    config: Config,
    run_dir: str | Path,
    *,
    task: str | None = None,
    strict_format: bool | None = None,
    budget_hours: float | None = None,
    budget_usd: float | None = None,
    price_per_hour: float | None = None,
    api_price_per_1m: float | None = None,
    target: float | None = None,
    sample_size: int | None = None,
    shots: int | None = None,
    calibrate: bool | None = None,
    progress: Progress | None = None,
    generation_progress: Callable[[int], None] | None = None,
) -> Advice:
    """Measure, estimate and decide for ``config`` on its prepared data (RUN/data); write RUN/advice.json. An argument left None takes its value from the config's ``decide`` section."""
    from tunewise.data.prepare import load_split
    from tunewise.decide.baseline import choose_sample, instruction, measure_prompting
    from tunewise.decide.estimate import DEFAULT_METHODS, estimate_run
    from tunewise.evaluate.run import load_for_eval
    from tunewise.lm.device import evaluation_dtype, precision_for
    from tunewise.rundir import RunDir, atomic_write_json

    d = config.decide
    task = d.task if task is None else task
    strict_format = d.strict_format if strict_format is None else strict_format
    budget_hours = d.budget_hours if budget_hours is None else budget_hours
    budget_usd = d.budget_usd if budget_usd is None else budget_usd
    price_per_hour = d.price_per_hour if price_per_hour is None else price_per_hour
    api_price_per_1m = d.api_price_per_1m if api_price_per_1m is None else api_price_per_1m
    target = d.target if target is None else target
    sample_size = d.sample if sample_size is None else sample_size
    shots = d.shots if shots is None else shots
    calibrate = d.calibrate if calibrate is None else calibrate
    say = progress or (lambda message: None)
    if task is not None and task not in TASKS:
        raise ValueError(_("unknown task {task!r}; use one of {tasks}").format(task=task, tasks=', '.join(TASKS)))
    run = RunDir.of(run_dir)
    if not run.split("train").is_file():
        raise DataError(_("{data} has no prepared training split: run `tunewise data prepare` first "
                          "(`tunewise advise CONFIG` prepares it for you)").format(data=run.data))
    train = load_split(run.data, "train")
    val = load_split(run.data, "val") if run.split("val").is_file() else []
    inferred = infer_task(train)
    info = inferred if task is None else TaskInfo(task, "given", labels=inferred.labels if task == "classification" else None,
                                                 json_answers=inferred.json_answers, evidence=inferred.evidence)
    strict = infer_strict_format(info) if strict_format is None else strict_format

    # measured prompting baselines
    metric = config.eval.metrics[0]
    say(_("loading the base model to measure prompting on {sample_size} rows").format(sample_size=sample_size))
    precision = precision_for(config)
    model, tokenizer = load_for_eval(config, "base", run, device=precision.device, dtype=evaluation_dtype(precision))
    sample = choose_sample(train, val, size=sample_size, shots=shots, seed=config.training.seed, labels=info.labels)
    text = instruction(info.task, info.labels, strict, info.json_answers)
    say(_("generating zero-shot and few-shot answers"))
    variants = measure_prompting(model, tokenizer, sample, config.eval.metrics, text=text,
                                 max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size,
                                 progress=generation_progress)
    del model
    label_counts: dict[str, int] = {}
    for e in train:
        label_counts[(e.reference or "").strip()] = label_counts.get((e.reference or "").strip(), 0) + 1
    rare = sorted(l for l in (info.labels or []) if label_counts.get(l, 0) < RARE_LABEL)
    baselines = {"n": len(sample.rows), "from_val": sample.from_val, "from_train": sample.from_train,
                 "shots": len(sample.shots), "instruction": text, "metric": metric, "variants": variants,
                 "rare_labels": [f"{l} ({label_counts.get(l, 0)})" for l in rare]}

    # estimates: memory of every method (meta device), then time of the chosen one from a calibration run
    say(_("estimating memory and time of each method"))
    estimate = estimate_run(config, run.root, DEFAULT_METHODS, calibrate=False, price_per_hour=price_per_hour,
                            api_price_per_1m=api_price_per_1m, progress=progress, write=False)
    available = estimate["hardware"]["available_mb"]
    kwargs = dict(task=info, strict_format=strict, examples=estimate["workload"]["examples"], metric=metric,
                  baselines=baselines, available_mb=available, budget_hours=budget_hours, budget_usd=budget_usd,
                  target=target, devices=estimate.get("devices", 1))
    decision, ckpt, reasons, not_chosen, rules, sharding = decide(estimates=estimate["methods"], **kwargs)
    if decision == "qlora":  # never recommend a quantized base that would train wrongly here
        from tunewise.decide.footprint import method_config
        from tunewise.train.verify_quantized import check_on_this_machine

        say(_("checking on one batch that QLoRA's gradients are right on this machine"))
        kwargs["qlora_check"] = check_on_this_machine(method_config(config, "qlora"), run.root)
        decision, ckpt, reasons, not_chosen, rules, sharding = decide(estimates=estimate["methods"], **kwargs)
    if calibrate and decision != "prompting":
        say(_("calibrating {decision}: a few real training steps").format(decision=decision))
        calibrated = estimate_run(config, run.root, [decision], calibrate=True, price_per_hour=price_per_hour,
                                  api_price_per_1m=api_price_per_1m, progress=progress, write=False)
        estimate["methods"][decision] = calibrated["methods"][decision]
        decision, ckpt, reasons, not_chosen, rules, sharding = decide(estimates=estimate["methods"], **kwargs)
    summary = _summary(decision, ckpt, metric, baselines, estimate, sharding)
    advice = Advice(
        decision=decision, gradient_checkpointing=ckpt, summary=summary, reasons=reasons, not_chosen=not_chosen,
        rules=rules, sharding=sharding, devices=estimate.get("devices", 1),
        inputs={"task": info.task, "task_source": info.source, "task_evidence": info.evidence, "labels": info.labels,
                "strict_format": strict, "strict_format_source": "given" if strict_format is not None else "inferred",
                "usable_examples": estimate["workload"]["examples"], "target": target, "budget_hours": budget_hours,
                "budget_usd": budget_usd, "price_per_hour": price_per_hour, "api_price_per_1m": api_price_per_1m,
                "hardware": estimate["hardware"], "device": estimate["device"], "model": config.model},
        baselines=baselines,
        estimates=estimate,
    )
    atomic_write_json(run.advice, advice.to_dict())
    return advice


def _summary(decision: str, ckpt: bool, metric: str, baselines: dict[str, Any], estimate: dict[str, Any],
             sharding: str | None = None) -> str:
    variant, best = best_prompting(baselines, metric)
    if decision == "prompting":
        return _("Do not fine-tune now: prompt the base model (best measured {metric} {best}, {variant}).").format(
            metric=metric, best=_pct(best), variant=variant)
    e = estimate["methods"][decision]
    minutes = e["time"]["total_s"] / 60
    memory = e["memory"]["peak_mb"]
    how = ""
    if sharding:
        devices = e["sharding"]["devices"]
        memory = e["sharding"]["engines"][sharding]["peak_mb_with_checkpointing" if ckpt else "peak_mb_without_checkpointing"]
        how = _(", sharded over {devices} devices (training.sharding: {sharding})").format(devices=devices,
                                                                                            sharding=sharding)
    return _("Fine-tune with {decision}{ckpt}{how}: prompting reaches {best} {metric} ({variant}); {decision} needs "
             "~{gb:.1f} GB{per_device} and ~{minutes:.1f} min ({source}).").format(
        decision=decision, ckpt=_(" and gradient checkpointing") if ckpt else "", how=how, best=_pct(best), metric=metric,
        variant=variant, gb=memory / 1024, per_device=_(" per device") if sharding else "", minutes=minutes,
        source=e["time"]["source"])
