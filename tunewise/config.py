"""One validated config, loaded from YAML, with ``key=value`` overrides.

Every error names the field, the value given and what is allowed (see :func:`format_errors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tunewise.catalog import N_, _, current_language, translate

METHODS = ("full", "lora", "dora", "qlora", "ia3", "prompt")
OBJECTIVES = ("sft", "dpo", "orpo", "kto")  # what a training step optimises: tunewise/objectives/<name>.py
TASKS = ("classification", "extraction", "summarisation", "generation", "code", "domain-specific")  # tunewise advise
"""The methods this version trains (kept in step with :data:`tunewise.lm.adapters.METHODS`, which a test checks)."""

REFUSED_METHODS = {
    "prefix": N_(
        "method 'prefix' (prefix tuning) is refused: with transformers 5 `generate()` ignores the learned prefix "
        "(past_key_values are dropped when a cache is set), so the saved adapter would answer exactly like the untuned "
        "model in generation and when served. Use method: prompt (prompt tuning: learned virtual tokens that generation "
        "does use) or lora/dora for more capacity"
    ),
}
"""Methods known but refused at validation, each with why and what to use instead."""


class ConfigError(ValueError):
    """A config that cannot be used; the message is meant for the user as is."""


SEED_MAX = 2**32 - 1  # numpy's and Python's seeding accept 0 .. 2**32 - 1


def plain_text(value: str | None, *, what: str | None = None) -> str | None:
    """A name or path with no NUL byte or other control character (the OS refuses them, a terminal garbles them)."""
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(_("{what} must not contain control characters (a NUL byte, a newline, ...)").format(
            what=what or _("this field")))
    return value


def _not_bool(value: Any) -> Any:
    # pydantic reads true/false as 1/0 for numbers: `lora.r: true` is a mistake, not rank 1
    if isinstance(value, bool):
        raise ValueError(_("must be a number, not true/false"))
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


class _Section(BaseModel):
    # allow_inf_nan=False: `inf` epochs or a NaN learning rate is refused here, naming the field
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SplitConfig(_Section):
    """Train / validation / test split: ratios (summing to 1) or absolute counts."""

    train: Float = 0.8
    val: Float = 0.1
    test: Float = 0.1

    @model_validator(mode="after")
    def _check(self) -> "SplitConfig":
        values = (self.train, self.val, self.test)
        if any(v < 0 for v in values):
            raise ValueError(_("split sizes must be >= 0, got train={train}, val={val}, test={test}").format(
                train=self.train, val=self.val, test=self.test))
        if not self.is_counts and abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(
                _("split ratios must sum to 1 (or all be whole counts), got {values:g} (train={train}, "
                  "val={val}, test={test})").format(values=sum(values), train=self.train, val=self.val, test=self.test)
            )
        return self

    @property
    def is_counts(self) -> bool:
        """True when every value is a whole number and at least one is above 1 (counts, not ratios)."""
        values = (self.train, self.val, self.test)
        return all(float(v).is_integer() for v in values) and any(v > 1 for v in values)


class DataConfig(_Section):
    path: str | None = Field(None, description="A file, folder or glob of JSONL/JSON/CSV/Parquet data.")
    format: Literal["auto", "alpaca", "chat", "sharegpt", "completion", "text", "preference", "unpaired"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict, description="internal field -> column in the file")
    system_prompt: str | None = Field(None, description="Added as the system message to examples that have none.")
    test_path: str | None = Field(None, description="Use this file as the test split instead of carving one out.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    stratify_by: str | None = Field(
        None, description="Field to stratify the split by: 'answer' (the reference answer), the answer's column, or a "
        "field kept in meta (e.g. 'label'); null = the answer when the answers are class labels, else none. A field "
        "that does not exist after loading is an error."
    )
    seed: Int = Field(42, ge=0, le=SEED_MAX)
    max_tokens: Int = Field(1024, gt=0, description="Longest example in tokens (rendered chat template).")
    min_tokens: Int = Field(1, ge=0)
    overlength: Literal["drop", "truncate", "truncate_end"] = Field(
        "drop", description="An example over max_tokens: drop it; truncate = cut the end of the last user message (the "
        "system prompt, the template and the answer are kept); truncate_end = cut the end of the rendered example."
    )
    clean_control_chars: bool = Field(
        True, description="Remove invisible control characters (C0 other than tab/newline/CR, DEL, C1) instead of "
        "rejecting the row; counted in the data report."
    )
    dedup: bool = True
    near_dedup_threshold: Float | None = Field(None, gt=0, le=1, description="Jaccard threshold for MinHash near-duplicates; off when null.")
    max_examples: Int | None = Field(None, gt=0, description="Keep at most this many examples (after cleaning, before splitting).")
    remove_overlap: bool = Field(True, description="Drop train/val examples that duplicate a later split's (so nothing leaks into evaluation); reported either way.")
    overlap_threshold: Float | None = Field(0.8, gt=0, le=1, description="Jaccard threshold for near-duplicate overlap between splits; null = exact overlap only.")
    augment_shuffle: Int = Field(0, ge=0, le=100, description="Extra training copies of each example whose answer is a list, with the items reordered.")
    augment_paraphrase: Int = Field(0, ge=0, le=100, description="Extra training copies of each example with the instruction paraphrased by a causal LM.")
    paraphrase_model: str | None = Field(None, description="Model that paraphrases (a name, folder or hub id); null = the base model.")

    @field_validator("path", "test_path", "paraphrase_model")
    @classmethod
    def _plain_paths(cls, value: str | None) -> str | None:
        return plain_text(value, what="a path")


class LoraConfig(_Section):
    r: Int = Field(16, gt=0)
    alpha: Float = Field(32, gt=0)
    dropout: Float = Field(
        0.0, ge=0, lt=1, description="Dropout on the adapter's input. Off by default: with every linear layer adapted, "
        "PEFT's dropout keeps a copy of each adapted layer's input for backward (q, k and v each their own), 39% of the "
        "saved activations of SmolLM2-135M (estimated peak 18.5 -> 11.7 GB at batch 8 x ~260-token rows)."
    )
    target_modules: list[str] | Literal["auto", "all-linear", "attention"] = "auto"
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha/sqrt(r) instead of alpha/r.")
    use_dora: bool = Field(False, description="DoRA (weight-decomposed LoRA); `method: dora` turns it on.")


class QuantizationConfig(_Section):
    """How the frozen base is quantized for ``method: qlora`` (bitsandbytes)."""

    bits: Literal[4, 8] = Field(4, description="4 = NF4/FP4 weights (QLoRA), 8 = LLM.int8 weights.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="4-bit only: also quantize the quantization constants.")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = the training precision (bf16/fp16 on CUDA, float32 on CPU)."
    )


class IA3Config(_Section):
    """(IA)^3: learned vectors that rescale activations of the target modules."""

    target_modules: list[str] | Literal["auto"] = Field("auto", description="auto = key, value and MLP down projections.")
    feedforward_modules: list[str] | Literal["auto"] = Field(
        "auto", description="Targets scaled on their input (MLP layers); auto = the down projection. Must be among the targets."
    )


class PromptConfig(_Section):
    """Prompt tuning: learned virtual tokens put before every input."""

    num_virtual_tokens: Int = Field(20, gt=0, le=512)
    init_text: str | None = Field(None, description="Initialise the virtual tokens from this text's embeddings; null = random.")


def learning_rate_used(written: float | None, train_summary: dict[str, Any] | None) -> str:
    """The learning rate a run trained with: as written in its config, or as training chose it when the config left it
    automatic (train_summary.json's ``learning_rate``; "automatic" before training)."""
    if written is not None:
        return f"{written:g}"
    chosen = (train_summary or {}).get("learning_rate")
    return f"{chosen['learning_rate']:g} (automatic)" if isinstance(chosen, dict) and "learning_rate" in chosen else "automatic"


class TrainingConfig(_Section):
    epochs: Float | None = Field(
        None, gt=0, le=100_000, description="Passes over the training data; null = automatic: a small data set gets "
        "enough passes for about 200 optimizer steps (at most 3), a large one a single pass (tunewise/train/schedule.py).")
    max_steps: Int = Field(-1, le=10**9, description="Stop after this many optimizer steps; -1 means run the epochs.")
    per_device_train_batch_size: Int = Field(8, gt=0)
    per_device_eval_batch_size: Int = Field(16, gt=0)
    gradient_accumulation_steps: Int = Field(1, gt=0)
    learning_rate: Float | None = Field(
        None, gt=0, lt=1, description="null = automatic: LoRA/DoRA/QLoRA 1e-3, full 1e-4, IA3 3e-3, prompt tuning 3e-2; "
        "0.3x that from 5B parameters on, 0.2x for DPO/ORPO/KTO (tunewise/train/learning_rate.py).")
    weight_decay: Float = Field(0.0, ge=0)
    warmup_ratio: Float = Field(0.0, ge=0, lt=1)
    warmup_steps: Int = Field(0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    bf16: bool | None = Field(None, description="null = automatic (on for CUDA devices that support it, off on CPU).")
    fp16: bool | None = Field(None, description="null = automatic (on for CUDA devices without bf16).")
    gradient_checkpointing: bool | None = Field(
        None, description="Activation checkpointing (recompute each layer in backward: less memory, ~30% more compute); "
        "null = automatic: on when the estimated peak would not fit in the memory available.")
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "sgd", "adamw_8bit"] = Field(
        "adamw_torch_fused", description="adamw_torch_fused: one fused kernel per step (CPU and CUDA; transformers' own "
        "default); adamw_8bit: bitsandbytes 8-bit moments."
    )
    max_grad_norm: Float = Field(1.0, gt=0)
    logging_steps: Int = Field(5, gt=0)
    save_steps: Int = Field(100, gt=0)
    eval_steps: Int | None = Field(
        None, gt=0, description="Evaluate every N steps; null = at the end of each epoch, or every N steps chosen so "
        "that an epoch too short for one evaluation within training.eval_budget is not evaluated every time.")
    save_total_limit: Int | None = Field(2, gt=0)
    loss_on: Literal["answers", "all", "last_turn"] = "answers"
    group_by_length: bool = True
    packing: bool = Field(
        True,
        description="Padding-free batches: a batch's examples end to end with restarting position ids, no attention "
        "across examples, the same loss as padded batches (prompt tuning always pads).",
    )
    packing_row_tokens: Int | None = Field(
        None, gt=0, description="Cap on a packed row's length in tokens (below it rows are sized by cost); null = data.max_tokens."
    )
    share_prefix: bool = Field(
        True, description="With packing: tokens that open every example of a batch (system prompt, template header) "
        "are computed once per row; the loss is unchanged."
    )
    metric_for_best_model: str = Field(
        "eval_loss",
        description="What 'best' means for early stopping and the final model: eval_loss (lower is better) or a metric "
        "of eval.metrics computed by generating answers for validation examples at each evaluation (higher is better).",
    )
    load_best_model_at_end: bool = Field(
        True, description="The final model is the best evaluated one (needs validation data); false = the last step."
    )
    early_stopping_patience: Int | None = Field(
        None, gt=0, description="Stop after this many evaluations without improvement of metric_for_best_model; null = never."
    )
    early_stopping_min_delta: Float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    eval_generation_examples: Int = Field(
        64, gt=0, description="Validation examples generated at each evaluation when metric_for_best_model is not eval_loss."
    )
    eval_budget: Float = Field(
        0.05, gt=0, le=1, description="Share of the training time the in-training evaluations may take: a larger "
        "validation split is evaluated on a fixed seeded sample of it during training, evaluations are spaced by steps "
        "when even the sample is too dear once per epoch, and a run too short for one before its last step evaluates "
        "nothing (1 = always all of it, at the configured cadence).",
    )
    sharding: Literal["fsdp", "zero2", "zero3"] | None = Field(
        None, description="Shard the model over the processes (docs/scale.md): fsdp = PyTorch FSDP2 (weights, gradients "
        "and optimizer states; CPU and GPU), zero2 / zero3 = DeepSpeed ZeRO stage 2 / 3 (GPU, the deepspeed extra). The "
        "engine's config file is written to the run directory; null = every process holds the whole model (DDP).",
    )
    deepspeed: str | None = Field(None, description="Your own DeepSpeed JSON config file instead of a zero2/zero3 preset (GPU).")
    fsdp: str | None = Field(None, description="transformers' FSDP options string, e.g. 'full_shard auto_wrap'; prefer sharding: fsdp.")
    fsdp_config: dict[str, Any] | None = Field(None, description="transformers fsdp_config keys laid over the fsdp preset (sharding: fsdp).")
    seed: Int = Field(42, ge=0, le=SEED_MAX)

    @field_validator("max_steps")
    @classmethod
    def _steps_or_epochs(cls, value: int) -> int:
        if value == 0 or value < -1:  # 0 trained one step and -5 meant "use epochs" before this was checked
            raise ValueError(_("must be a positive number of optimizer steps, or -1 to train for training.epochs"))
        return value

    @field_validator("deepspeed")
    @classmethod
    def _plain_deepspeed(cls, value: str | None) -> str | None:
        return plain_text(value, what="a path")

    @model_validator(mode="after")
    def _one_sharding_engine(self) -> "TrainingConfig":
        zero = self.sharding in ("zero2", "zero3")
        if self.deepspeed and (self.sharding or self.fsdp):
            raise ValueError(_("training.deepspeed (your DeepSpeed file) and training.{field} both choose how to "
                               "shard: keep one (sharding: zero2/zero3 writes a DeepSpeed preset)").format(
                field='sharding' if self.sharding else 'fsdp'))
        if self.fsdp and self.sharding:
            raise ValueError(_("training.fsdp and training.sharding both choose how to shard: use sharding: fsdp "
                               "(with training.fsdp_config for your own FSDP keys)"))
        if self.fsdp_config and (zero or not (self.sharding == "fsdp" or self.fsdp)):
            raise ValueError(_("training.fsdp_config is laid over the FSDP preset: it needs training.sharding: "
                               "fsdp"))
        return self

    @field_validator("metric_for_best_model")
    @classmethod
    def _known_best_metric(cls, value: str) -> str:
        from tunewise.metrics import METRICS

        name = value.removeprefix("eval_")
        if value != "eval_loss" and name not in METRICS:
            raise ValueError(_("unknown metric {value!r}; allowed: eval_loss, {metrics}").format(
                value=value, metrics=', '.join(METRICS)))
        return value


class EvalConfig(_Section):
    metrics: list[str] = Field(
        default_factory=lambda: ["exact_match", "accuracy", "token_f1"],
        description="Names from tunewise.metrics.METRICS (exact_match, accuracy, token_f1, bleu, chrf, rouge1, ...).",
    )
    max_new_tokens: Int = Field(64, gt=0)
    batch_size: Int = Field(16, gt=0)
    max_examples: Int | None = Field(None, gt=0, description="Evaluate on at most this many test examples.")
    baseline: bool = Field(True, description="Also evaluate the untuned base model, for the comparison.")
    few_shot: Int = Field(
        4, ge=0, description="The base model is also evaluated with this many training examples in its prompt (and the "
        "label list for a classification task), on the same test rows; 0 = not."
    )
    constrained: bool = Field(
        True, description="Classification: also score each model by the label it ranks highest (log-likelihood of "
        "each label as the answer); the fair baseline, and the headline when there are labels."
    )
    perplexity: bool | Literal["auto"] = Field(
        "auto", description="Reference perplexity: auto = from the label scores (classification) or its own pass on "
        "test sets up to 60k tokens; true = always; false = never."
    )
    examples_in_report: Int = Field(10, ge=0)


    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        from tunewise.metrics import METRICS

        unknown = [m for m in value if m not in METRICS or not METRICS[m].from_text]
        if unknown:
            allowed = ", ".join(k for k, m in METRICS.items() if m.from_text)
            hint = " (constrained_accuracy is on with eval.constrained)" if "constrained_accuracy" in unknown else ""
            raise ValueError(_("unknown metric(s) {unknown}; allowed: {allowed}{hint}").format(
                unknown=unknown, allowed=allowed, hint=hint))
        if not value:
            raise ValueError(_("name at least one metric"))
        return value


# --- monitor section (issue 5: monitoring, guards, integrations) ---------------------------------------------------
class MonitorConfig(_Section):
    """What is watched during training and where metrics go besides RUN/metrics.jsonl (see docs/monitoring.md)."""

    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="Also log to TensorBoard (RUN/tensorboard) and/or MLflow (a local file store)."
    )
    mlflow_tracking_uri: str | None = Field(None, description="MLflow store; null = file:OUTPUT_DIR/mlruns (offline).")
    mlflow_experiment: str = "tunewise"
    live: Literal["auto", "rich", "plain", "off"] = Field(
        "auto", description="auto = a rich progress view in a terminal, plain log lines otherwise; off = the Trainer's bar."
    )
    nan_guard: bool = Field(True, description="Stop the run when the loss or gradients become NaN/inf.")
    max_grad_norm_limit: Float | None = Field(
        1000.0, gt=0, description="Stop when a logged (pre-clipping) gradient norm exceeds this; null = never."
    )
    spike_factor: Float = Field(2.0, gt=1, description="Warn when a logged train loss exceeds this times the recent median.")
    spike_window: Int = Field(10, ge=3, description="How many recent logged train losses the spike median uses.")
    overfit_patience: Int = Field(
        3, gt=0, description="Evaluations in a row with eval loss above its best while train loss fell: overfitting."
    )
    early_stopping: bool = Field(False, description="Stop the run when overfitting is detected (see overfit_patience).")
    plots: bool = Field(True, description="Write RUN/plots/*.png at the end of training.")

    @field_validator("live", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false (and `on` as true): `live: off` means the word
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value
# --- end monitor section ---


class DecideConfig(_Section):
    """Inputs of ``tunewise advise`` and ``tunewise estimate`` (each can also be given as a command-line option,
    which wins); see docs/decide.md."""

    task: Literal[TASKS] | None = Field(  # type: ignore[valid-type]
        None, description="The task type; null = inferred from the training answers."
    )
    strict_format: bool | None = Field(None, description="Outputs must follow a strict format; null = inferred.")
    target: Float = Field(0.9, gt=0, le=1, description="Prompting is enough when its best measured score reaches this.")
    sample: Int = Field(48, gt=0, description="Rows the base model is prompted on (validation first, then unused train rows).")
    shots: Int = Field(4, ge=0, description="Few-shot examples from the training split.")
    budget_hours: Float | None = Field(None, gt=0, description="Most device-hours to spend on training.")
    budget_usd: Float | None = Field(None, gt=0, description="Most money to spend (needs a price).")
    price_per_hour: Float | None = Field(None, gt=0, description="Device price per hour, for the cost estimate.")
    api_price_per_1m: Float | None = Field(None, gt=0, description="API-style training price per 1M trained tokens.")
    methods: list[str] = Field(default_factory=lambda: ["full", "lora", "qlora"], description="Methods `estimate` compares.")
    devices: int | None = Field(None, ge=1, description="Devices the memory estimate shards over (per-device memory of "
                                "fsdp/zero2/zero3, and advise suggests sharding); null = this machine's GPUs, 1 on CPU.")
    calibrate: bool = Field(True, description="Time a few real training steps (else time from FLOPs).")
    calibration_steps: Int = Field(4, gt=0, description="Timed calibration steps (after one warmup step).")

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, value: Any) -> Any:
        if value is not None and value not in TASKS:
            raise ValueError(_("unknown task {value!r}; allowed: {tasks} or null (inferred)").format(
                value=value, tasks=', '.join(repr(t) for t in TASKS)))
        return value

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in METHODS]
        if unknown or not value:
            raise ValueError(_("unknown method(s) {unknown}; allowed: {methods}").format(
                unknown=unknown, methods=', '.join(METHODS)))
        return value

    @model_validator(mode="after")
    def _budget_needs_price(self) -> "DecideConfig":
        if self.budget_usd is not None and self.price_per_hour is None and self.api_price_per_1m is None:
            raise ValueError(_("decide.budget_usd needs a price: set decide.price_per_hour or "
                               "decide.api_price_per_1m (on the command line: --price-per-hour or "
                               "--api-price-per-1m)"))
        return self


class DPOConfig(_Section):
    beta: Float = Field(0.1, gt=0, description="How far the policy may move from the reference: smaller = further "
                        "(TRL's default 0.1).")


class ORPOConfig(_Section):
    beta: Float = Field(0.1, gt=0, description="Weight of the odds-ratio term against the NLL of the chosen answer "
                        "(the paper's lambda; TRL's default 0.1).")


class KTOConfig(_Section):
    beta: Float = Field(0.1, gt=0, description="As DPO's beta.")
    desirable_weight: Float = Field(1.0, gt=0, description="Weight of the desirable answers' loss.")
    undesirable_weight: Float = Field(1.0, gt=0, description="Weight of the undesirable answers' loss; the KTO "
                                      "paper keeps desirable_weight x desirable rows / (undesirable_weight x "
                                      "undesirable rows) within [1, 4/3].")


class Config(_Section):
    name: str = "run"
    output_dir: str = "runs"
    model: str = Field("tiny", description="'smollm2-135m', 'tiny', a local folder or a Hugging Face hub id.")
    trust_remote_code: bool = False
    method: str = "lora"
    objective: Literal[OBJECTIVES] = Field(  # type: ignore[valid-type]
        "sft", description="What training optimises (docs/objectives.md): sft (answers), dpo / orpo (preference pairs: "
        "prompt, chosen, rejected), kto (answers marked desirable or not)."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    quantization: QuantizationConfig | None = Field(None, description="method qlora only; null = its defaults (4-bit NF4, double quant).")
    ia3: IA3Config = Field(default_factory=IA3Config)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    decide: DecideConfig = Field(default_factory=DecideConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    orpo: ORPOConfig = Field(default_factory=ORPOConfig)
    kto: KTOConfig = Field(default_factory=KTOConfig)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value in REFUSED_METHODS:
            raise ValueError(translate(REFUSED_METHODS[value]))
        if value not in METHODS:
            raise ValueError(_("unknown method {value!r}; allowed: {methods}").format(
                value=value, methods=', '.join(METHODS)))
        return value

    @model_validator(mode="after")
    def _method_sections(self) -> "Config":
        if self.method == "qlora" and self.quantization is None:
            self.quantization = QuantizationConfig()
        elif self.method != "qlora" and self.quantization is not None:
            raise ValueError(_("quantization is used by method qlora only (method is {method!r}); set method: "
                               "qlora or remove it").format(method=self.method))
        if self.objective in ("dpo", "kto") and self.method == "prompt":
            raise ValueError(_("objective {objective} with method prompt is not supported: its reference is the "
                               "model with the adapter disabled, which prompt tuning can't score the same way; "
                               "use method lora (or objective orpo, which needs no reference)").format(
                                   objective=self.objective))
        if self.method == "qlora" and (self.training.sharding or self.training.fsdp or self.training.deepspeed):
            raise ValueError(_("method qlora with training.sharding is not supported: the 4-bit base is not "
                               "sharded by FSDP / ZeRO here; use method: lora with sharding: fsdp, or qlora on "
                               "one device per process"))
        return self

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(_("run name {value!r} must be a plain folder name (no '/')").format(value=value))
        plain_text(value, what=_("the run name"))
        if len(value.encode("utf-8")) > 200:
            raise ValueError(_("the run name is a folder name: at most 200 bytes"))
        return value

    @field_validator("output_dir", "model")
    @classmethod
    def _plain_places(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(_("must not be empty"))
        return plain_text(value, what=_("a path or model name")) or value

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------------------------------------------------
# loading


def _parse_scalar(text: str) -> Any:
    """A command-line value, parsed as YAML would (so ``1e-4``, ``true``, ``[a, b]`` and ``null`` work)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-4" as a string; accept it as a number as a user would expect
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw config dict (a new dict is returned); a key given twice takes the
    last value (commands add their options as overrides after the user's)."""
    import copy

    result = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(_("override {item!r} must look like key=value, e.g. training.learning_rate=1e-4").format(
                item=item))
        key, _sep, text = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(_("override {item!r} has an empty key").format(item=item))
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(_("override {item!r}: {part!r} is not a section").format(item=item, part=part))
            node = child
        node[parts[-1]] = _parse_scalar(text)
    return result


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'" if text[0] in "'\"" else text[: limit - 3] + "..."


# pydantic's messages (English only) by error type, in pydantic's words, for the other languages; ctx fills the fields
PYDANTIC_MESSAGES = {
    "missing": N_("Field required"),
    "int_type": N_("Input should be a valid integer"),
    "int_parsing": N_("Input should be a valid integer, unable to parse string as an integer"),
    "int_from_float": N_("Input should be a valid integer, got a number with a fractional part"),
    "float_type": N_("Input should be a valid number"),
    "float_parsing": N_("Input should be a valid number, unable to parse string as a number"),
    "bool_type": N_("Input should be a valid boolean"),
    "bool_parsing": N_("Input should be a valid boolean, unable to interpret input"),
    "string_type": N_("Input should be a valid string"),
    "list_type": N_("Input should be a valid list"),
    "dict_type": N_("Input should be a valid dictionary"),
    "model_type": N_("Input should be a valid dictionary or instance of {class_name}"),
    "greater_than": N_("Input should be greater than {gt}"),
    "greater_than_equal": N_("Input should be greater than or equal to {ge}"),
    "less_than": N_("Input should be less than {lt}"),
    "less_than_equal": N_("Input should be less than or equal to {le}"),
    "literal_error": N_("Input should be {expected}"),
    "enum": N_("Input should be {expected}"),
}


def format_errors(error: ValidationError) -> str:
    """One line per problem: the field, the value given, and what is allowed."""
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        value = err.get("input")
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            msg = _("unknown field (check the spelling; see examples/ for every field)")
        elif err["type"] in PYDANTIC_MESSAGES and current_language() != "en":  # English: pydantic's own words
            try:
                msg = translate(PYDANTIC_MESSAGES[err["type"]]).format(**(err.get("ctx") or {}))
            except (KeyError, IndexError):  # a pydantic version that fills other fields: its English words
                pass
        # a section-wide rule (split ratios) names its values in the message; anything else shows what was given
        shown = "" if isinstance(value, dict) and err["type"] == "value_error" else _(" (got {value})").format(
            value=_short(value))
        lines.append(f"{loc}: {msg}{shown}")
    return _("invalid config:") + "\n  " + "\n  ".join(lines)


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    raw = apply_overrides(raw or {}, overrides or [])
    if not all(isinstance(k, str) for k in raw):
        bad = next(k for k in raw if not isinstance(k, str))
        raise ConfigError(_("invalid config:") + "\n  " + _("{bad}: a field name must be text (got a {kind})").format(
            bad=_short(bad), kind=type(bad).__name__))
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, _("duplicate key {key!r} (first given on line {line}): keep one").format(
                        key=key, line=first.start_mark.line + 1),
                    key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text parsed safely (no tags that run code), duplicate keys refused; errors name ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = _(" line {line}, column {column}:").format(line=mark.line + 1, column=mark.column + 1)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(_("{source}:{where} not valid YAML: {problem}").format(
            source=source, where=where, problem=problem)) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file; a missing, unreadable, binary, empty or non-mapping file is a ConfigError."""
    if not path.is_file():
        what = _("is a folder, not a config file") if path.is_dir() else _("not found")
        raise ConfigError(_("config file {path!r} {what}; pass the path of a YAML config such as "
                            "examples/quickstart.yaml").format(path=str(path), what=what))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(_("config file {path!r} can't be read ({strerror}); check its permissions").format(
            path=str(path), strerror=exc.strerror)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(_("config file {path!r} is not a text YAML file (byte {byte:#04x} at offset "
                            "{offset} is not UTF-8); pass a YAML config such as examples/quickstart.yaml").format(
                                path=str(path), byte=data[exc.start], offset=exc.start)) from None
    if "\x00" in text:
        raise ConfigError(_("config file {path!r} is not a text YAML file (it has NUL bytes); pass a YAML "
                            "config such as examples/quickstart.yaml").format(path=str(path)))
    raw = parse_yaml(text.removeprefix("\ufeff"), str(path))
    if raw is None:
        raise ConfigError(_("config file {path!r} is empty; a config needs at least data.path (see "
                            "examples/quickstart.yaml)").format(path=str(path)))
    if not isinstance(raw, dict):
        raise ConfigError(_("{path}: the top level must be a mapping of fields (name: ..., data: ...), got "
                            "{kind} {raw}").format(path=path, kind=type(raw).__name__, raw=_short(raw)))
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides and validate. Raises :class:`ConfigError` with a readable message."""
    path = Path(path)
    raw = read_config_file(path)
    config = config_from_dict(raw, overrides)
    # relative data paths are relative to the config file, so a config can be run from anywhere
    base = path.parent
    for attr in ("path", "test_path"):
        value = getattr(config.data, attr)
        try:
            if value and not Path(value).is_absolute() and not Path(value).exists() and (base / value).exists():
                setattr(config.data, attr, str(base / value))
        except OSError:  # a name the OS can't look up (too long): reported when the data is read
            pass
    return config
