"""The words tunewise shows in more than one language, in one place: message id -> {language: text}.

Today it holds the best-practice checklist (tunewise/checklist.py: its phases, items, findings and flags; the Chinese
item wording is the guide's own) and the dashboard's labels (tunewise/ui/). A later gettext-style catalogue can take
these entries over as they are: every id has a text in every language of :data:`LANGUAGES` (a test checks it).

The language is chosen by ``--lang`` where a command has it, else by the ``TUNEWISE_LANG`` environment variable,
else English (:func:`resolve_language`).
"""

from __future__ import annotations

import os

LANGUAGES = ("en", "zh")

MESSAGES: dict[str, dict[str, str]] = {
    # --- checklist: phases, in the guide's order --------------------------------------------------------------------
    "phase.prepare": {"en": "Preparation", "zh": "准备阶段"},
    "phase.data": {"en": "Data", "zh": "数据准备"},
    "phase.training": {"en": "Training setup", "zh": "训练配置"},
    "phase.monitoring": {"en": "Monitoring", "zh": "训练监控"},
    "phase.evaluation": {"en": "Evaluation", "zh": "评估验证"},
    "phase.deployment": {"en": "Deployment", "zh": "部署阶段"},
    # --- checklist: the 24 items ------------------------------------------------------------------------------------
    "item.task_goal": {"en": "Clear task goal", "zh": "明确任务目标"},
    "item.need_finetuning": {"en": "Evaluate whether fine-tuning is needed", "zh": "评估是否需要微调"},
    "item.enough_data": {"en": "Enough data", "zh": "准备足够的数据"},
    "item.right_method": {"en": "Right method", "zh": "选择合适的方法"},
    "item.quality_data": {"en": "High-quality data collected", "zh": "收集高质量数据"},
    "item.cleaned": {"en": "Data cleaned and preprocessed", "zh": "数据清洗和预处理"},
    "item.split": {"en": "Train / validation / test split", "zh": "划分训练/验证/测试集"},
    "item.augmentation": {"en": "Data augmentation (if needed)", "zh": "数据增强（如需要）"},
    "item.base_model": {"en": "Suitable base model", "zh": "选择合适的基础模型"},
    "item.hyperparameters": {"en": "Sensible hyperparameters", "zh": "设置合理的超参数"},
    "item.lr_schedule": {"en": "Learning-rate schedule", "zh": "配置学习率调度"},
    "item.early_stopping": {"en": "Early stopping", "zh": "设置早停机制"},
    "item.train_loss": {"en": "Training loss watched", "zh": "监控训练损失"},
    "item.val_loss": {"en": "Validation loss watched", "zh": "监控验证损失"},
    "item.learning_rate": {"en": "Learning rate watched", "zh": "监控学习率"},
    "item.memory": {"en": "Memory watched", "zh": "监控显存使用"},
    "item.test_eval": {"en": "Test-set evaluation", "zh": "测试集评估"},
    "item.baseline": {"en": "Comparison with the baseline", "zh": "与基线对比"},
    "item.error_analysis": {"en": "Error analysis", "zh": "错误分析"},
    "item.deployment_cost": {"en": "Deployment cost", "zh": "评估部署成本"},
    "item.compression": {"en": "Model compression", "zh": "模型压缩"},
    "item.inference_perf": {"en": "Inference performance test", "zh": "推理性能测试"},
    "item.ab_test": {"en": "A/B test", "zh": "A/B测试"},
    "item.live_monitoring": {"en": "Monitoring the live model", "zh": "监控线上效果"},
    # --- checklist: statuses ----------------------------------------------------------------------------------------
    "status.done": {"en": "done", "zh": "已完成"},
    "status.todo": {"en": "not done", "zh": "未完成"},
    "status.na": {"en": "not applicable", "zh": "不适用"},
    "checklist.title": {"en": "Best-practice checklist", "zh": "最佳实践检查清单"},
    "checklist.progress": {"en": "{done} of {total} done", "zh": "已完成 {done}/{total}"},
    "checklist.flags": {"en": "{n} contradicted by the evidence", "zh": "{n} 项与证据矛盾"},
    "checklist.evidence": {"en": "evidence", "zh": "证据"},
    "checklist.command": {"en": "to do it", "zh": "执行"},
    "checklist.flag": {"en": "check", "zh": "注意"},
    # --- checklist: findings (what the evidence says) ---------------------------------------------------------------
    "note.task_given": {"en": "task {task} (decide.task in the config)", "zh": "任务类型 {task}（配置 decide.task）"},
    "note.task_advised": {"en": "task {task} ({source})", "zh": "任务类型 {task}（{source}）"},
    "note.task_missing": {"en": "no task named: set decide.task, or let `advise` infer it from the data",
                          "zh": "未指定任务：设置 decide.task，或让 `advise` 从数据推断"},
    "note.advised": {"en": "advise: {decision} ({summary})", "zh": "advise 建议：{decision}（{summary}）"},
    "note.no_advice": {"en": "no advice.json: the base model was not measured against prompting first",
                       "zh": "没有 advice.json：未先测量基础模型的提示词效果"},
    "note.enough": {"en": "{n} training examples; the minimum for {task} is {minimum}",
                    "zh": "{n} 条训练样本；{task} 任务至少需要 {minimum} 条"},
    "note.no_data": {"en": "the data is not prepared yet", "zh": "数据尚未准备"},
    "note.method_matches": {"en": "method {method}, as advised", "zh": "方法 {method}，与建议一致"},
    "note.method_unadvised": {"en": "method {method} chosen without advice", "zh": "未经建议选择了方法 {method}"},
    "note.quality": {"en": "{kept} of {read} rows kept ({share} rejected)", "zh": "保留 {kept}/{read} 行（拒绝 {share}）"},
    "note.cleaned": {"en": "{rejected} rows rejected with reasons ({reasons}); exact dedup {dedup}, near dedup {near}",
                     "zh": "拒绝 {rejected} 行并记录原因（{reasons}）；精确去重 {dedup}，近似去重 {near}"},
    "note.not_cleaned": {"en": "deduplication is off (data.dedup: false)", "zh": "去重已关闭（data.dedup: false）"},
    "note.split": {"en": "train {train} / val {val} / test {test}; overlap between splits removed: {removed}",
                   "zh": "训练 {train} / 验证 {val} / 测试 {test}；已移除跨集合重叠 {removed} 条"},
    "note.no_test": {"en": "no test split: nothing held out to evaluate on", "zh": "没有测试集：没有留出数据用于评估"},
    "note.augmented": {"en": "{n} augmented training rows", "zh": "增强训练样本 {n} 条"},
    "note.augment_not_needed": {"en": "not needed: {n} training examples (at least {minimum} for {task})",
                                "zh": "不需要：{n} 条训练样本（{task} 任务至少 {minimum} 条）"},
    "note.augment_needed": {"en": "only {n} training examples for {task} (minimum {minimum}) and no augmentation",
                            "zh": "{task} 任务仅 {n} 条训练样本（至少 {minimum} 条）且未做数据增强"},
    "note.estimate": {"en": "{model}: estimated peak {peak_gb} GB of {available_gb} GB available",
                      "zh": "{model}：预计峰值 {peak_gb} GB，可用 {available_gb} GB"},
    "note.no_estimate": {"en": "no estimate.json: memory and time not checked before training",
                         "zh": "没有 estimate.json：训练前未检查显存和时间"},
    "note.hyper": {"en": "lr {lr}, batch {batch}; train loss {first} -> {last}", "zh": "学习率 {lr}，批大小 {batch}；训练损失 {first} -> {last}"},
    "note.not_trained": {"en": "not trained yet", "zh": "尚未训练"},
    "note.schedule": {"en": "{scheduler} schedule, warmup {warmup}; lr logged {lo} .. {hi}",
                      "zh": "{scheduler} 调度，预热 {warmup}；记录的学习率 {lo} .. {hi}"},
    "note.schedule_constant": {"en": "constant learning rate without warmup", "zh": "学习率恒定且无预热"},
    "note.early_stopping": {"en": "{how}", "zh": "{how}"},
    "note.no_early_stopping": {"en": "no early stopping (training.early_stopping_patience and monitor.early_stopping unset)",
                               "zh": "未设置早停（training.early_stopping_patience 和 monitor.early_stopping 均未设置）"},
    "note.no_val_for_stopping": {"en": "no validation split: early stopping has nothing to watch",
                                 "zh": "没有验证集：早停无从判断"},
    "note.train_loss": {"en": "{n} train records, loss {first} -> {last}", "zh": "{n} 条训练记录，损失 {first} -> {last}"},
    "note.val_loss": {"en": "{n} evaluations, best eval loss {best} at step {step}", "zh": "{n} 次评估，最佳验证损失 {best}（第 {step} 步）"},
    "note.no_val": {"en": "no validation split", "zh": "没有验证集"},
    "note.no_evals": {"en": "no evaluation logged", "zh": "没有记录评估"},
    "note.lr_logged": {"en": "{n} learning-rate values logged", "zh": "记录了 {n} 个学习率值"},
    "note.memory": {"en": "peak {mb} MiB ({field})", "zh": "峰值 {mb} MiB（{field}）"},
    "note.no_metrics": {"en": "no metrics.jsonl", "zh": "没有 metrics.jsonl"},
    "note.test_eval": {"en": "{models} scored on {n} test examples", "zh": "{models} 在 {n} 条测试样本上评分"},
    "note.no_test_eval": {"en": "the tuned model is not evaluated on the test split", "zh": "微调模型尚未在测试集上评估"},
    "note.baseline": {"en": "{metric}: {base} -> {tuned}, delta {delta} (95% CI {lo} .. {hi})",
                      "zh": "{metric}：{base} -> {tuned}，差值 {delta}（95% 置信区间 {lo} .. {hi}）"},
    "note.no_comparison": {"en": "no comparison with the base model", "zh": "没有与基础模型的对比"},
    "note.errors": {"en": "{errors} of {n} test examples not perfect on {metric}", "zh": "{n} 条测试样本中 {errors} 条在 {metric} 上不完全正确"},
    "note.no_errors": {"en": "no error analysis of the tuned model", "zh": "没有微调模型的错误分析"},
    "note.cost": {"en": "{variant}: {weights} MiB of weights, peak {peak} MiB, {tps} tokens/s at batch {batch}",
                  "zh": "{variant}：权重 {weights} MiB，峰值 {peak} MiB，批大小 {batch} 时 {tps} tokens/s"},
    "note.no_bench": {"en": "not benchmarked", "zh": "尚未做性能基准测试"},
    "note.compressed": {"en": "exported: {what}", "zh": "已导出：{what}"},
    "note.not_compressed": {"en": "no merged or quantized export", "zh": "没有合并或量化的导出"},
    "note.perf": {"en": "{variants}: TTFT p50 {ttft} ms, per token p50 {per_token} ms",
                  "zh": "{variants}：首字延迟 p50 {ttft} ms，每 token p50 {per_token} ms"},
    "note.ab": {"en": "{variants}; control {control}", "zh": "{variants}；对照组 {control}"},
    "note.no_ab": {"en": "no A/B summary (serve the run, then `tunewise abtest`)",
                   "zh": "没有 A/B 汇总（先部署服务，再运行 `tunewise abtest`）"},
    "note.feedback": {"en": "{n} feedback records, {errors} error records in the serve logs",
                      "zh": "服务日志中有 {n} 条反馈记录、{errors} 条错误记录"},
    "note.no_feedback": {"en": "no feedback from the served model", "zh": "线上模型没有收到反馈"},
    # --- checklist: flags (the evidence contradicts the item) -------------------------------------------------------
    "flag.prompting_enough": {"en": "advise said prompting reaches the target, yet the run fine-tunes",
                              "zh": "advise 认为提示词已达目标，但仍进行了微调"},
    "flag.method_differs": {"en": "advise chose {decision}, the run trains {method}", "zh": "advise 建议 {decision}，但训练使用 {method}"},
    "flag.too_few": {"en": "{n} training examples, below the {minimum} advised for {task}",
                     "zh": "{n} 条训练样本，低于 {task} 任务建议的 {minimum} 条"},
    "flag.many_rejected": {"en": "{share} of the rows were rejected: check data/rejects.jsonl",
                           "zh": "{share} 的行被拒绝：请检查 data/rejects.jsonl"},
    "flag.test_overlaps_train": {"en": "test split overlaps train: {n} examples", "zh": "测试集与训练集重叠：{n} 条"},
    "flag.estimate_over": {"en": "the estimated peak memory is above what is available", "zh": "预计峰值显存超过可用显存"},
    "flag.loss_not_falling": {"en": "train loss did not fall ({first} -> {last})", "zh": "训练损失没有下降（{first} -> {last}）"},
    "flag.guard_warnings": {"en": "{n} guard warning(s): {events}", "zh": "{n} 条监控警告：{events}"},
    "flag.val_rising": {"en": "validation loss rising for the last {n} evaluations", "zh": "验证损失在最近 {n} 次评估中持续上升"},
    "flag.not_better": {"en": "the tuned model is not significantly better than the base on {metric}",
                        "zh": "微调模型在 {metric} 上并不显著优于基础模型"},
    "flag.worse": {"en": "the tuned model is significantly worse than the base on {metric}",
                   "zh": "微调模型在 {metric} 上显著差于基础模型"},
    "flag.ab_worse": {"en": "{variant} is significantly worse than the control on {metric}",
                      "zh": "{variant} 在 {metric} 上显著差于对照组"},
    # --- dashboard labels -------------------------------------------------------------------------------------------
    "ui.runs": {"en": "Runs", "zh": "运行"},
    "ui.compare": {"en": "Compare", "zh": "对比"},
    "ui.playground": {"en": "Playground", "zh": "试用"},
    "ui.new_run": {"en": "New run", "zh": "新建运行"},
    "ui.status": {"en": "status", "zh": "状态"},
    "ui.method": {"en": "method", "zh": "方法"},
    "ui.model": {"en": "model", "zh": "模型"},
    "ui.name": {"en": "name", "zh": "名称"},
    "ui.best_eval_loss": {"en": "best eval loss", "zh": "最佳验证损失"},
    "ui.main_metric": {"en": "main metric", "zh": "主要指标"},
    "ui.checklist": {"en": "checklist", "zh": "检查清单"},
    "ui.all": {"en": "all", "zh": "全部"},
    "ui.filter": {"en": "filter", "zh": "筛选"},
    "ui.curves": {"en": "Curves", "zh": "曲线"},
    "ui.warnings": {"en": "Guard warnings", "zh": "监控警告"},
    "ui.no_warnings": {"en": "no warnings", "zh": "没有警告"},
    "ui.report": {"en": "Report", "zh": "报告"},
    "ui.cancel": {"en": "Cancel", "zh": "取消"},
    "ui.resume": {"en": "Resume", "zh": "继续训练"},
    "ui.metrics": {"en": "Metrics", "zh": "指标"},
    "ui.prompt": {"en": "Prompt", "zh": "提示词"},
    "ui.send": {"en": "Send", "zh": "发送"},
    "ui.config": {"en": "Config", "zh": "配置"},
    "ui.validate": {"en": "Check", "zh": "校验"},
    "ui.estimate": {"en": "Estimate", "zh": "估算"},
    "ui.start": {"en": "Start", "zh": "开始"},
    "ui.valid": {"en": "valid", "zh": "有效"},
    "ui.points": {"en": "points", "zh": "点"},
}


def resolve_language(lang: str | None = None) -> str:
    """``lang`` if given, else $TUNEWISE_LANG, else English; an unknown language is a ValueError naming the choices."""
    chosen = (lang or os.environ.get("TUNEWISE_LANG") or "en").strip().lower()
    chosen = {"zh-cn": "zh", "zh_cn": "zh", "cn": "zh", "chinese": "zh", "english": "en"}.get(chosen, chosen)
    if chosen not in LANGUAGES:
        raise ValueError(f"language {lang or chosen!r} is not available; choose one of {', '.join(LANGUAGES)}")
    return chosen


def text(key: str, lang: str = "en", **params: object) -> str:
    """The message ``key`` in ``lang``, its ``{fields}`` filled from ``params``."""
    template = MESSAGES[key][lang]
    return template.format(**params) if params else template


def messages(lang: str, prefix: str = "") -> dict[str, str]:
    """Every message whose id starts with ``prefix``, in ``lang`` (what the dashboard's pages are given)."""
    return {key: texts[lang] for key, texts in MESSAGES.items() if key.startswith(prefix)}
