"""``prepare_data``: load, normalise, validate, deduplicate, split, augment, measure and write a data folder.

Rows stream through (parse -> normalise -> check -> exact dedup -> tokenize -> token limits -> near dedup) in
batches, rejected rows go straight to ``rejects.jsonl``, and only the kept examples stay in memory.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from tunewise.catalog import _
from tunewise.config import DataConfig
from tunewise.data.dedup import (
    NearDuplicateIndex,
    content_key,
    example_text,
    signatures,
)
from tunewise.data.formats import (
    Shape,
    check_columns,
    check_format,
    data_kind,
    detect_shape,
    normalize,
    suggest_config,
)
from tunewise.data.io import (
    RawRow,
    atomic_open,
    dumps,
    iter_rows,
    write_json,
    write_jsonl,
)
from tunewise.data.labels import ANSWER, answer_label, detect_labels, meta_label
from tunewise.data.split import SPLITS, split_items
from tunewise.data.stats import DataReport, TokenCounts, label_counts, token_stats
from tunewise.data.validate import check_example, check_tokens, clean_control_chars
from tunewise.errors import DataError, Reject, RowError
from tunewise.example import Example
from tunewise.lm.chat import IGNORE_INDEX, encode_examples, truncate_prompt
from tunewise.rundir import data_report_file, rejects_file, split_path, staged_dir

BATCH = 1024
DETECT_WINDOW = 100  # rows a file may start with before its format must be recognisable
SAMPLE_ROWS = 20  # rows kept as they were read, to name the columns seen when most rows do not load
SHAPE_REASONS = ("missing_field", "wrong_type")  # rejections that say the rows are not in the format being read
MOST = 0.5  # more than this share of rows rejected for SHAPE_REASONS: the data is not loaded as the user meant


@dataclass
class Item:
    """A kept example with what later stages need: its dedup key, token counts and MinHash signature."""

    example: Example
    key: bytes
    tokens: TokenCounts
    sig: np.ndarray | None = None


class RejectLog:
    """Writes rejected rows to an open ``rejects.jsonl`` as they come, and counts them per reason."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.counts: Counter[str] = Counter()

    def add(self, source: str, line: int, error: RowError, raw: Any = None, **extra: Any) -> None:
        self.counts[error.code] += 1
        record = Reject(source=source, line=line, reason=error.code, message=error.message, raw=raw, extra=extra)
        self.stream.write(dumps(record.to_record()) + "\n")


@dataclass
class LoadState:
    """What :func:`normalised` learns while reading: each file's shape, the columns it saw, a few raw rows, and what
    cleaning removed."""

    shapes: dict[str, Shape] = field(default_factory=dict)
    fields: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    cleaned_rows: int = 0
    cleaned_chars: int = 0
    shape_rejects: int = 0


@dataclass
class _Collected:
    items: list[Item] = field(default_factory=list)
    read: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    formats: dict[str, str] = field(default_factory=dict)
    state: LoadState = field(default_factory=LoadState)


# --------------------------------------------------------------------------------------------------------------------
# normalising


def normalised(
    rows: Iterable[RawRow], config: DataConfig, rejects: RejectLog, formats: dict[str, str], state: LoadState | None = None,
    *, objective: str | None = None,
) -> Iterator[tuple[RawRow, Example]]:
    """Parsed rows -> checked Examples; every other row goes to ``rejects``. With ``format: auto`` each file's shape
    is detected from its first recognisable row (its format recorded in ``formats``, the shape in ``state``). With
    ``config.clean_control_chars`` invisible control characters are removed (counted in ``state``) before the checks.
    With ``objective`` (sft, dpo, orpo, kto) a file whose format is not what that objective trains on is a DataError
    as soon as its format is known (:func:`check_objective`)."""
    fmt = check_format(config.format)
    state = state if state is not None else LoadState()
    pending: list[RawRow] = []
    current: str | None = None
    columns: dict[str, dict[str, str]] = {}  # source -> the columns its rows are read with
    clean = getattr(config, "clean_control_chars", False)

    def emit(row: RawRow) -> Iterator[tuple[RawRow, Example]]:
        if row.error is not None:
            rejects.add(row.source, row.line, row.error, row.raw)
            return
        if len(state.samples) < SAMPLE_ROWS:
            state.samples.append(dict(row.record))
        if sum(state.fields.values()) < 200 * 8:
            state.fields.update(str(k) for k in row.record)
        try:
            example = normalize(row.record, formats[row.source], columns[row.source], system_prompt=config.system_prompt)
            if clean:
                removed = clean_control_chars(example)
                if removed:
                    state.cleaned_rows += 1
                    state.cleaned_chars += removed
            check_example(example)
        except RowError as err:
            if err.code in SHAPE_REASONS:
                state.shape_rejects += 1
            rejects.add(row.source, row.line, err, row.record)
            return
        example.meta["source"], example.meta["line"] = row.source, row.line
        yield row, example

    def settle(source: str, shape: Shape) -> None:
        merged = {**shape.columns, **config.columns}
        check_columns(shape.format, merged)
        if objective is not None:
            check_objective(objective, source, shape)
        formats[source], state.shapes[source], columns[source] = shape.format, shape, merged

    for row in rows:
        if row.source != current:
            if pending:  # the previous file never showed a recognisable row
                _undetected(pending, config)
            current, pending = row.source, []
        if row.source not in formats:
            if fmt != "auto":
                settle(row.source, Shape(fmt))
            elif row.record is not None and (found := detect_shape(row.record, config.columns)):
                settle(row.source, found)
            else:
                pending.append(row)
                if sum(r.record is not None for r in pending) >= DETECT_WINDOW:
                    _undetected(pending, config)
                continue
            for early in pending:
                yield from emit(early)
            pending = []
        elif row.source not in columns:  # formats given by the caller (a second pass over the same files)
            settle(row.source, Shape(formats[row.source]))
        yield from emit(row)
    if pending:
        if all(r.record is None for r in pending):  # nothing but unparseable rows: reject them all
            for r in pending:
                if r.error is not None:
                    rejects.add(r.source, r.line, r.error, r.raw)
        else:
            _undetected(pending, config)


_WANTS = {
    "sft": "conversations or question -> answer rows (chat, alpaca, sharegpt, completion, text)",
    "pairs": "preference pairs: {prompt, chosen, rejected} rows or chat-style {chosen, rejected} conversations "
             "(data.format: preference)",
    "unpaired": "answers marked desirable or not: {prompt, completion, label: true|false} rows (data.format: unpaired)",
}
_SUGGEST = {"sft": "sft", "pairs": "dpo or orpo", "unpaired": "kto"}


def check_objective(objective: str, source: str, shape: Shape) -> None:
    """A DataError when ``source``'s rows (read as ``shape``) are not what ``objective`` trains on: DPO / ORPO need
    pairs, KTO marked answers, SFT conversations. The error names the objective, the format found and the one needed."""
    from tunewise.objectives import get_objective  # torch: imported only when a config's objective is checked

    need, have = get_objective(objective).data, data_kind(shape.format)
    if need != have:
        raise DataError(_("objective {objective} trains on {need}, but {source} is read as {describe}; give "
                          "the data in that format, or set objective: {have} to train on these rows").format(
                              objective=objective, need=_WANTS[need], source=source, describe=shape.describe(), have=_SUGGEST[have]))


def _undetected(rows: list[RawRow], config: DataConfig) -> None:
    records = [r.record for r in rows if r.record is not None]
    fields = ", ".join(map(str, list(records[0])[:8])) or "(none)"
    hint = suggest_config(records[:SAMPLE_ROWS])
    raise DataError(
        _("cannot tell the format of {source} (fields: {fields}); ").format(source=rows[0].source, fields=fields)
        + (_("to read it as question -> answer pairs set {hint}; otherwise ").format(hint=hint) if hint else "")
        + _("set data.format to alpaca, chat, sharegpt, completion, text, preference or unpaired and "
            "map other field names with data.columns")
    )


def shape_error(path: str, state: LoadState, read: int, rejected: Counter[str], rejects_path: Path) -> str:
    """The one-line error for data whose rows mostly do not fit the format they are read as: the columns seen, how
    the rows were read, and the config lines that would load them."""
    seen = ", ".join(f"{k}" for k, _count in state.fields.most_common(8)) or _("(none)")
    read_as = "; ".join(sorted({s.describe() for s in state.shapes.values()})) or _("no format")
    top = ", ".join(f"{k} {v}" for k, v in rejected.most_common(3))
    hint = suggest_config(state.samples)
    return (_("{n} of {read} rows of {path} do not fit the format they were read as ({read_as}; rejected: {top}); "
              "the rows have the columns {seen}").format(n=state.shape_rejects, read=read, path=path, read_as=read_as,
                                                         top=top, seen=seen)
            + (_("; to load them as question -> answer pairs set {hint}").format(hint=hint) if hint else "")
            + _("; see {rejects_path}").format(rejects_path=rejects_path))


# --------------------------------------------------------------------------------------------------------------------
# collecting


Measured = tuple[tuple[str, str, int] | None, TokenCounts | None, np.ndarray | None, list[dict[str, Any]] | None]


def scored_tokens(example: Example, loss_on: str) -> str:
    """The ``loss_on`` an example is measured and previewed with: the preference objectives score the last answer
    only (tunewise/objectives/), whatever ``training.loss_on`` says."""
    return "last_turn" if example.rejected is not None or example.desirable is not None else loss_on


def _measure(batch: list[Example]) -> list[Measured]:
    """Tokenize a batch with the chat template (as training does), apply the token checks (cutting the prompt side of
    an example over ``max_tokens`` with ``overlength: truncate``) and compute near-duplicate signatures. Runs in a
    worker process (state from :func:`_init_worker`) or inline. For each example: ``(reject, counts, signature,
    messages)`` where ``reject`` is ``(code, message, n_tokens)`` or None and ``messages`` replace the example's when
    its prompt was cut (else None). A preference pair is measured on both sides (see :func:`_measure_pair`)."""
    tokenizer, loss_on, config, need_sigs = _STATE["tokenizer"], _STATE["loss_on"], _STATE["config"], _STATE["need_sigs"]
    out: list[Measured] = [(None, None, None, None)] * len(batch)
    texts: list[Example] = list(batch)
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(batch):
        groups.setdefault("pairs" if example.rejected is not None else scored_tokens(example, loss_on), []).append(i)
    for mode, ix in groups.items():
        if mode == "pairs":
            chosen = encode_examples([batch[i] for i in ix], tokenizer, loss_on="last_turn")
            rejected = encode_examples([batch[i].rejected_example() for i in ix], tokenizer, loss_on="last_turn")
            for i, c, r in zip(ix, chosen, rejected):
                out[i], texts[i] = _measure_pair(batch[i], c, r, tokenizer, config)
        else:
            for i, enc in zip(ix, encode_examples([batch[i] for i in ix], tokenizer, loss_on=mode)):
                out[i], texts[i] = _measure_one(batch[i], enc, tokenizer, config, mode)
    if need_sigs:
        keep = [i for i, r in enumerate(out) if r[0] is None]
        for i, sig in zip(keep, signatures([example_text(texts[i]) for i in keep])):
            out[i] = (None, out[i][1], sig, out[i][3])
    return out


def _measure_one(example: Example, enc: Any, tokenizer: Any, config: DataConfig, loss_on: str) -> tuple[Measured, Example]:
    """The token checks of one example (its prompt cut with ``overlength: truncate``); (result, example as kept)."""
    limit = config.max_tokens
    n, trained = len(enc), enc.n_trained
    if n > limit and config.overlength == "truncate" and trained:
        cut = truncate_prompt(example, tokenizer, limit, loss_on=loss_on, encoded=enc)  # type: ignore[arg-type]
        if cut is None:
            message = (f"{n} tokens, more than data.max_tokens={limit}, and cutting the last user message cannot "
                       "bring it under (the answer or earlier turns are too long); raise data.max_tokens")
            return (("too_long", message, n), None, None, None), example
        cut_example, cut_enc = cut
        return (None, TokenCounts.of(cut_enc, truncated=True), None, cut_example.messages), cut_example
    after_cut = sum(1 for x in enc.labels[:limit] if x != IGNORE_INDEX) if n > limit else None
    err = check_tokens(n, trained, after_cut, min_tokens=config.min_tokens, max_tokens=limit, overlength=config.overlength)
    if err is not None:
        return ((err.code, err.message, n), None, None, None), example
    counts = TokenCounts.of(enc)
    if after_cut is not None:  # truncate_end: training sees the first max_tokens tokens
        counts = TokenCounts(prompt=min(counts.prompt, limit), total=limit, trained=after_cut, truncated=True)
    return (None, counts, None, None), example


def _measure_pair(example: Example, chosen: Any, rejected: Any, tokenizer: Any, config: DataConfig) -> tuple[Measured, Example]:
    """The token checks of a preference pair: too long (or short) when either side is; ``overlength: truncate`` cuts
    the shared prompt (the same cut on both sides, found on the longer side), never an answer. Its token counts are
    its longer side's (what bounds memory)."""
    limit = config.max_tokens
    sides = (("", chosen), ("rejected side: ", rejected))
    n = max(len(chosen), len(rejected))
    if n > limit and config.overlength == "truncate" and chosen.n_trained and rejected.n_trained:
        longer = example if len(chosen) >= len(rejected) else example.rejected_example()
        cut = truncate_prompt(longer, tokenizer, limit, loss_on="last_turn",
                              encoded=chosen if len(chosen) >= len(rejected) else rejected)
        if cut is not None:
            prompt = cut[0].prompt_messages
            kept = Example(messages=prompt + example.messages[len(example.prompt_messages):], meta=example.meta,
                           rejected=example.rejected, desirable=example.desirable)
            c, r = encode_examples([kept, kept.rejected_example()], tokenizer, loss_on="last_turn")
            if len(c) <= limit and len(r) <= limit and c.n_trained and r.n_trained:
                longest = c if len(c) >= len(r) else r
                return (None, TokenCounts.of(longest, truncated=True), None, kept.messages), kept
        message = (f"{n} tokens on its longer side, more than data.max_tokens={limit}, and cutting the last user "
                   "message cannot bring both sides under (an answer or earlier turns are too long); raise data.max_tokens")
        return (("too_long", message, n), None, None, None), example
    counts: list[TokenCounts] = []
    for prefix, enc in sides:
        m = len(enc)
        after_cut = sum(1 for x in enc.labels[:limit] if x != IGNORE_INDEX) if m > limit else None
        err = check_tokens(m, enc.n_trained, after_cut, min_tokens=config.min_tokens, max_tokens=limit,
                           overlength=config.overlength)
        if err is not None:
            return ((err.code, prefix + err.message, m), None, None, None), example
        side = TokenCounts.of(enc)
        if after_cut is not None:
            side = TokenCounts(prompt=min(side.prompt, limit), total=limit, trained=after_cut, truncated=True)
        counts.append(side)
    return (None, max(counts, key=lambda c: c.total), None, None), example


_STATE: dict[str, Any] = {}


def _init_worker(tokenizer: Any, loss_on: str, config: DataConfig, need_sigs: bool) -> None:
    _STATE.update(tokenizer=tokenizer, loss_on=loss_on, config=config, need_sigs=need_sigs)


class _Measurer:
    """Runs :func:`_measure` on batches in order: inline for the first batch (small inputs never start processes),
    then in a pool of worker processes with a bounded number of batches in flight (memory stays bounded)."""

    def __init__(self, tokenizer: Any, loss_on: str, config: DataConfig, need_sigs: bool, workers: int) -> None:
        self.args = (tokenizer, loss_on, config, need_sigs)
        self.workers = workers
        self.pool: Any = None
        self.batches_seen = 0
        self.inflight: deque[tuple[list[Any], Any]] = deque()
        _init_worker(*self.args)

    def submit(self, batch: list[Any]) -> Iterator[tuple[list[Any], list[Any]]]:
        """Queue a batch of (example, key); yields finished (batch, results) pairs in submission order."""
        self.batches_seen += 1
        if self.workers > 1 and self.pool is None and self.batches_seen > 1:
            import multiprocessing as mp

            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warning from the Rust tokenizer
            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self.pool = mp.get_context(method).Pool(self.workers, initializer=_init_worker, initargs=self.args)
        if self.pool is None:
            yield batch, _measure([ex for ex, _other in batch])
            return
        self.inflight.append((batch, self.pool.apply_async(_measure, ([ex for ex, _other in batch],))))
        while len(self.inflight) > 2 * self.workers:
            done, result = self.inflight.popleft()
            yield done, result.get()

    def drain(self) -> Iterator[tuple[list[Any], list[Any]]]:
        while self.inflight:
            done, result = self.inflight.popleft()
            yield done, result.get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def _collect(path: str, config: DataConfig, measurer: _Measurer, rejects: RejectLog, *, tick: Callable[[int], None],
             objective: str | None = None) -> _Collected:
    out = _Collected()
    seen: dict[bytes, tuple[str, int]] = {}
    near = NearDuplicateIndex(config.near_dedup_threshold) if config.near_dedup_threshold else None
    batch: list[tuple[Example, bytes]] = []

    def counted(rows: Iterable[RawRow]) -> Iterator[RawRow]:
        for row in rows:
            out.read += 1
            yield row

    def finish(done: list[tuple[Example, bytes]], results: list[Any]) -> None:
        for (example, key), (reject, counts, sig, messages) in zip(done, results):
            meta = example.meta
            if messages is not None:  # the prompt was cut to fit: what is written is what is trained and evaluated
                example.messages = messages
                key = content_key(example)
            if reject is not None:
                rejects.add(meta["source"], meta["line"], RowError(reject[0], reject[1]), example.to_record(), tokens=reject[2])
                continue
            out.stages["within token limits"] += 1
            if counts.truncated:
                meta["truncated"] = True
                out.stages["truncated (prompt side)" if messages is not None else "truncated (end)"] += 1
            if near is not None:
                found = near.find(sig)
                if found is not None:
                    (src, line), sim = found
                    err = RowError("near_duplicate", f"near-duplicate (estimated Jaccard {sim:.2f} >= {near.threshold}) of {src} line {line}")
                    rejects.add(meta["source"], meta["line"], err, example.to_record(), duplicate_of={"source": src, "line": line})
                    continue
                near.add((meta["source"], meta["line"]), sig)
            out.items.append(Item(example, key, counts, sig))
        tick(len(done))

    for row, example in normalised(counted(iter_rows(path)), config, rejects, out.formats, out.state, objective=objective):
        out.stages["valid"] += 1
        key = content_key(example)
        if config.dedup:
            first = seen.get(key)
            if first is not None:
                err = RowError("duplicate", f"exact duplicate of {first[0]} line {first[1]}")
                rejects.add(row.source, row.line, err, row.record, duplicate_of={"source": first[0], "line": first[1]})
                continue
            seen[key] = (row.source, row.line)
        out.stages["unique"] += 1
        batch.append((example, key))
        if len(batch) >= BATCH:
            for done, results in measurer.submit(batch):
                finish(done, results)
            batch = []
    if batch:
        for done, results in measurer.submit(batch):
            finish(done, results)
    for done, results in measurer.drain():
        finish(done, results)
    out.stages["near-unique"] = len(out.items)
    return out


# --------------------------------------------------------------------------------------------------------------------
# overlap between splits


def remove_overlap(
    splits: dict[str, list[Item]], threshold: float | None, *, remove: bool, rejects: RejectLog | None
) -> dict[str, dict[str, int]]:
    """Find train/val examples that duplicate (exactly, or near by ``threshold``) an example of a later split
    (val, test); report them per pair of splits and, with ``remove``, drop them from the earlier split."""
    report: dict[str, dict[str, int]] = {}
    for later in ("test", "val"):
        targets = splits.get(later) or []
        if not targets:
            continue
        keys = {it.key: it.example.meta for it in targets}
        index = None
        if threshold and all(it.sig is not None for it in targets):
            index = NearDuplicateIndex(threshold)
            for j, it in enumerate(targets):
                index.add(j, it.sig)
        for earlier in ("train", "val"):
            if earlier == later or (later == "val" and earlier != "train"):
                continue
            exact = near = 0
            kept = []
            for it in splits.get(earlier, []):
                hit: tuple[str, Any] | None = None
                if it.key in keys:
                    exact += 1
                    hit = ("exact", keys[it.key])
                elif index is not None and it.sig is not None and (found := index.find(it.sig)):
                    near += 1
                    hit = (f"near (estimated Jaccard {found[1]:.2f})", targets[found[0]].example.meta)
                if hit and remove:
                    if rejects is not None:
                        meta = it.example.meta
                        other = {"split": later, "source": hit[1].get("source"), "line": hit[1].get("line")}
                        msg = f"{hit[0]} duplicate of {later} example {other['source']} line {other['line']}; removed from {earlier}"
                        rejects.add(meta.get("source", ""), meta.get("line", 0), RowError("split_overlap", msg), it.example.to_record(), duplicate_of=other)
                    continue
                kept.append(it)
            splits[earlier] = kept
            report[f"{earlier}_{later}"] = {"exact": exact, "near": near, "removed": (exact + near) if remove else 0}
    return report


# --------------------------------------------------------------------------------------------------------------------
# the whole preparation


def prepare_data(
    config: DataConfig,
    tokenizer: Any,
    out_dir: Path,
    *,
    loss_on: str = "answers",
    progress: bool = True,
    paraphraser: Any = None,
    workers: int | None = None,
    objective: str | None = None,
) -> DataReport:
    """Prepare ``config.path`` into ``out_dir``: train/val/test.jsonl (Example records), rejects.jsonl and
    data_report.json, each written atomically. ``paraphraser`` (a :class:`tunewise.data.augment.Paraphraser`) is
    needed only when ``config.augment_paraphrase`` asks for paraphrases. ``workers`` processes tokenize (default: up to
    2; 1 = none started). ``objective`` (the config's: sft, dpo, orpo, kto) makes data in a format that objective cannot
    train on an error naming both. Raises DataError for unusable data."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not config.path:
        raise DataError(_("no data given; set data.path to a JSONL/JSON/CSV/Parquet file, a folder or a glob"))
    check_format(config.format)
    if config.format != "text" and not getattr(tokenizer, "chat_template", None):
        raise DataError(_("the tokenizer has no chat template; use a chat model's tokenizer, or "
                          "data.format=text for plain text"))
    if config.augment_paraphrase and paraphraser is None:
        raise DataError(_("data.augment_paraphrase needs a model to paraphrase with; run through `tunewise "
                          "data prepare` or pass paraphraser="))
    need_sigs = bool(config.overlap_threshold or config.near_dedup_threshold)
    rejects_path = rejects_file(out_dir)

    measurer = _Measurer(tokenizer, loss_on, config, need_sigs, workers if workers is not None else min(2, os.cpu_count() or 1))
    with _progress(progress) as tick, atomic_open(rejects_path) as stream, contextlib.closing(measurer), _gc_paused():
        rejects = RejectLog(stream)
        main = _collect(config.path, config, measurer, rejects, tick=tick, objective=objective)
        given_test = None
        if config.test_path:
            given_test = _collect(config.test_path, config, measurer, rejects, tick=tick, objective=objective)
        _check_shapes(config.path, main, rejects, rejects_path)
        if given_test is not None:
            _check_shapes(config.test_path or "", given_test, rejects, rejects_path)
        items = main.items
        unused: list[Item] = []
        if config.max_examples is not None and len(items) > config.max_examples:
            import random

            chosen = set(random.Random(config.seed).sample(range(len(items)), config.max_examples))
            unused = [it for i, it in enumerate(items) if i not in chosen]
            items = [it for i, it in enumerate(items) if i in chosen]
        task = classify(items, main, config)
        if items:
            get = task.label_of
            parts = split_items(items, config.split, seed=config.seed, has_test=given_test is not None,
                                label_of=(lambda it: get(it.example)) if get else None)  # fmt: skip
            unused += parts.pop("unused")
            if given_test is not None:
                parts["test"] = given_test.items
            overlap = remove_overlap(parts, config.overlap_threshold, remove=config.remove_overlap, rejects=rejects)
            augmented = _augment(parts, config, tokenizer, loss_on, paraphraser)

    rejected = dict(sorted(rejects.counts.items()))
    if not items:
        total = sum(rejected.values())
        top = ", ".join(f"{k} {v}" for k, v in Counter(rejects.counts).most_common(3))
        hint = suggest_config(main.state.samples) if main.state.shape_rejects else None
        seen = ", ".join(k for k, _count in main.state.fields.most_common(8))
        raise DataError(_("no valid row in {path} ({read} read, {total} rejected: {reasons})").format(
                            path=config.path, read=main.read, total=total, reasons=top or _('the file is empty'))
                        + (_("; the rows have the columns {seen}").format(
                            seen=seen) if seen and main.state.shape_rejects else "")
                        + (_("; to load them as question -> answer pairs set {hint}").format(hint=hint) if hint else "")
                        + _("; see {rejects_path}").format(rejects_path=rejects_path))

    files = {name: str(split_path(out_dir, name)) for name in SPLITS}
    files["rejects"] = str(rejects_path)

    read = main.read + (given_test.read if given_test else 0)
    states = [main.state] + ([given_test.state] if given_test else [])
    label_of = task.label_of or meta_label("label")
    report = DataReport(
        counts={
            "read": read,
            "kept": sum(len(parts[s]) for s in SPLITS) - augmented["total"],
            **{s: len(parts[s]) for s in SPLITS},
            "rejected": rejected,
            "rejected_total": sum(rejected.values()),
            "truncated": sum(1 for s in SPLITS for it in parts[s] if it.tokens.truncated),
            "truncated_prompt": main.stages["truncated (prompt side)"] + (given_test.stages["truncated (prompt side)"] if given_test else 0),
            "control_chars_cleaned": {"rows": sum(st.cleaned_rows for st in states), "chars": sum(st.cleaned_chars for st in states)},
            "unused": len(unused),
            "augmented": augmented,
            **preference_counts([it.example for s in SPLITS for it in parts[s]]),
        },
        stages=_stages(main, given_test, items, parts, augmented),
        tokens={s: token_stats([it.tokens for it in parts[s]]) for s in SPLITS},
        labels={s: label_counts(label_of(it.example) for it in parts[s]) for s in SPLITS},
        overlap=overlap,
        formats={**main.formats, **(given_test.formats if given_test else {})},
        shapes={src: shape.describe(config.columns) for st in states for src, shape in st.shapes.items()},
        task=task.to_dict(),
        files=files,
        config=config.model_dump(mode="json"),
        seconds=round(time.perf_counter() - started, 3),
    )
    files["report"] = str(data_report_file(out_dir))
    # the splits and the report appear together or not at all (a full disk must not leave train.jsonl alone)
    with staged_dir(out_dir) as stage:
        for name in SPLITS:
            write_jsonl(split_path(stage, name), (it.example.to_record() for it in parts[name]))
        write_json(data_report_file(stage), report.to_dict())
    return report


def preference_counts(examples: Iterable[Example]) -> dict[str, int]:
    """``pairs``, ``desirable`` and ``undesirable`` among ``examples`` (only the nonzero ones: SFT data has none)."""
    counts = Counter("pairs" if e.rejected is not None else "desirable" if e.desirable else "undesirable"
                     for e in examples if e.rejected is not None or e.desirable is not None)
    return {k: counts[k] for k in ("pairs", "desirable", "undesirable") if counts[k]}


def _check_shapes(path: str, collected: _Collected, rejects: RejectLog, rejects_path: Path) -> None:
    """A DataError when most rows of ``path`` do not fit the format they were read as (the data would be loaded as
    a fraction of itself): the error names the columns seen and the config lines that would load them."""
    state = collected.state
    if collected.items and state.shape_rejects > MOST * max(collected.read, 1):
        raise DataError(shape_error(path, state, collected.read, rejects.counts, rejects_path))


@dataclass
class Task:
    """What the prepared data is for: ``classification`` (few distinct short answers: the labels) or ``generation``;
    and what its split is stratified by (``label_field``, read by ``label_of``)."""

    type: str
    labels: list[str] | None
    label_field: str | None
    label_of: Callable[[Example], Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "labels": self.labels, "label_field": self.label_field}


def classify(items: list[Item], collected: _Collected, config: DataConfig) -> Task:
    """The task of the kept rows and the label the split is stratified by: ``data.stratify_by`` when given (the
    answer's column, ``answer``, or a field every format keeps in ``meta``; a field that does not exist after loading
    is an error), else the answer itself when the answers are class labels."""
    answers = [answer_label(it.example) for it in items]
    labels = detect_labels([a for a in answers if a is not None]) if answers and None not in answers else None
    kind = "classification" if labels else "generation"
    answer_columns = {ANSWER} | {shape_answer_column(s, config.columns) for s in collected.state.shapes.values()}
    answer_columns.discard(None)  # type: ignore[arg-type]
    field = config.stratify_by
    unpaired = bool(items) and all(it.example.desirable is not None for it in items)
    if unpaired and field in (None, "label", "desirable"):  # KTO: each split keeps the desirable / undesirable ratio
        return Task(kind, labels, "desirable", lambda ex: ex.desirable)
    if field is None:
        if labels:
            return Task(kind, labels, "answer", answer_label)
        return Task(kind, labels, None, None)
    name = field.removeprefix("meta.")
    if name in answer_columns and not any(name in it.example.meta for it in items):
        return Task(kind, labels, f"answer ({name})" if name != ANSWER else ANSWER, answer_label)
    if items and not any(name in it.example.meta for it in items):
        kept = sorted({k for it in items[:200] for k in it.example.meta if k not in ("source", "line", "truncated")})
        answer = sorted(c for c in answer_columns if c != ANSWER)
        raise DataError(
            _("data.stratify_by: no row has a field {field!r} after loading (fields kept besides the "
              "conversation: {fields}); use one of those, 'answer' (the reference answer").format(
                field=field, fields=', '.join(kept) or _('none'))
            + (_(", read from column {answer}").format(
                answer=', '.join(answer)) if answer else "") + _("), or remove stratify_by")
        )
    return Task(kind, labels, name, meta_label(name))


def shape_answer_column(shape: Shape, user_columns: dict[str, str]) -> str | None:
    """The column a shape reads the answer from (None for conversations, whose answer is the last assistant turn)."""
    cols = {**shape.columns, **user_columns}
    name = {"completion": "completion", "alpaca": "output"}.get(shape.format)
    return cols.get(name, name) if name else None


def _stages(main: _Collected, test: _Collected | None, items: list[Item], parts: dict[str, list[Item]], augmented: dict[str, int]) -> list[dict[str, Any]]:
    rows = [
        ("read", main.read + (test.read if test else 0)),
        ("valid", main.stages["valid"] + (test.stages["valid"] if test else 0)),
        ("unique", main.stages["unique"] + (test.stages["unique"] if test else 0)),
        ("within token limits", main.stages["within token limits"] + (test.stages["within token limits"] if test else 0)),
        ("near-unique", main.stages["near-unique"] + (test.stages["near-unique"] if test else 0)),
        ("selected (max_examples)", len(items) + (len(test.items) if test else 0)),
        ("split, after overlap removal", sum(len(parts[s]) for s in SPLITS) - augmented["total"]),
        ("with augmented train rows", sum(len(parts[s]) for s in SPLITS)),
    ]
    return [{"stage": name, "rows": n} for name, n in rows]


def _augment(parts: dict[str, list[Item]], config: DataConfig, tokenizer: Any, loss_on: str, paraphraser: Any) -> dict[str, int]:
    """Add augmented copies to train only (never to val or test); counts by method."""
    counts = {"shuffle": 0, "paraphrase": 0, "rejected": 0, "total": 0}
    # a preference pair or a marked answer is not augmented: a reworded copy would keep a mark it was never given
    plain = [it.example for it in parts["train"] if it.example.rejected is None and it.example.desirable is None]
    if not (config.augment_shuffle or config.augment_paraphrase) or not plain:
        return counts
    from tunewise.data.augment import augment_examples

    new, rejected = augment_examples(plain, config, paraphraser=paraphraser)
    counts["rejected"] = rejected
    if new:
        _init_worker(tokenizer, loss_on, config, False)
        kept = []
        for ex, (reject, tc, _unused, messages) in zip(new, _measure(new)):
            if reject is None:
                if messages is not None:
                    ex.messages = messages
                kept.append(Item(ex, content_key(ex), tc))
        seen = {it.key for s in SPLITS for it in parts[s]}
        kept = [it for it in kept if it.key not in seen]
        counts["rejected"] += len(new) - len(kept)
        for it in kept:
            counts[it.example.meta["augmented"]] += 1
            if it.tokens.truncated:
                it.example.meta["truncated"] = True
        parts["train"] = parts["train"] + kept
    counts["total"] = counts["shuffle"] + counts["paraphrase"]
    return counts


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while rows stream in: its full passes rescan every kept example (~15% of
    the time on 100k rows) and the pipeline creates no reference cycles."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _progress:
    """A rich progress line on stderr counting rows (nothing when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._p = Progress(SpinnerColumn(), TextColumn("preparing data: {task.completed:,} rows"), TimeElapsedColumn(),
                           console=Console(stderr=True), transient=True)  # fmt: skip
        self._p.__enter__()
        task = self._p.add_task("prepare", total=None)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._p.__exit__(*exc)


def load_split(out_dir: str | Path, split: str) -> list[Example]:
    """The examples of one split (``train``, ``val`` or ``test``) of a prepared data folder."""
    from tunewise.data.io import iter_file

    if split not in SPLITS:
        raise DataError(_("unknown split {split!r}; use one of {splits}").format(split=split, splits=', '.join(SPLITS)))
    path = split_path(out_dir, split)
    if not path.is_file():
        raise DataError(_("{path} not found; run `tunewise data prepare` first").format(path=path))
    out = []
    for row in iter_file(path):
        if row.record is None or "messages" not in row.record:
            raise DataError(_("{path} line {line} is not an example record; prepare the data again").format(
                path=path, line=row.line))
        out.append(Example.from_record(row.record))
    return out


def split_file(path: str, out_dir: str | Path, config: DataConfig) -> dict[str, int]:
    """Split a data file without a tokenizer (no token checks): read, normalise, validate, exact-dedup, split by
    ``config.split`` / ``seed`` / ``stratify_by``; writes train/val/test.jsonl and rejects.jsonl; returns counts."""
    out_dir = Path(out_dir)
    collected = _Collected()
    items = collected.items
    seen: dict[bytes, tuple[str, int]] = {}
    with atomic_open(rejects_file(out_dir)) as stream:
        rejects = RejectLog(stream)
        for row, example in normalised(iter_rows(path), config, rejects, collected.formats, collected.state):
            collected.read += 1
            key = content_key(example)
            if config.dedup and key in seen:
                first = seen[key]
                rejects.add(row.source, row.line, RowError("duplicate", f"exact duplicate of {first[0]} line {first[1]}"), row.record)
                continue
            seen[key] = (row.source, row.line)
            items.append(Item(example, key, TokenCounts(0, 0, 0)))
    if not items:
        raise DataError(_("no valid row in {path}; see {rejects}").format(path=path, rejects=rejects_file(out_dir)))
    get = classify(items, collected, config).label_of
    parts = split_items(items, config.split, seed=config.seed, label_of=(lambda it: get(it.example)) if get else None)
    counts = {name: write_jsonl(split_path(out_dir, name), (it.example.to_record() for it in parts[name])) for name in SPLITS}
    counts["unused"] = len(parts["unused"])
    counts["rejected"] = sum(rejects.counts.values())
    return counts
