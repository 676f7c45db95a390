"""Dynamic batching for the server: greedy requests that arrive close together share one ``generate`` call.

Each variant gets one :class:`Batcher` thread. A request hands it its prompt, its token budget, the queue its
:class:`tunewise.serve.engine.Generation` reads tokens from, and its cancel event. The batcher takes the first waiting
request, waits up to ``wait_s`` for more, the window restarting at each arrival (at most ``max_batch`` rows,
at most ``MAX_WAIT_WINDOWS`` windows), and generates for all of them at once: rows left
padded (a shared system prompt computed once, tunewise/lm/shared_prefix.py), each row's tokens streamed to its
own queue as they come, each row stopped on its own (its stop token, its budget, or its client gone) and answered at
once, without waiting for the longest row of the batch. Greedy answers are those of one request at a time.

Sampled requests (temperature > 0, optionally seeded) are not batched: one request's random draws would depend on
which others shared its batch.

transformers has continuous batching (``generate_batch``, paged attention) for the same purpose; it is built for
accelerators and does not stream per request through ``generate``'s streamer, which the server's stop strings and
cancellation rely on, so this uses plain ``generate`` with a short wait window instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

log = logging.getLogger(__name__)

END = object()  # put on a request's queue after its last token (the engine's sentinel)
MAX_BATCH = 8
WAIT_S = 0.02  # a lone request waits this long for company (~1% of a 2 s answer)
MAX_WAIT_WINDOWS = 5  # a burst is collected for at most 5 windows (100 ms)


@dataclass
class Request:
    prompt_ids: list[int]
    max_tokens: int
    tokens: queue.Queue
    cancel: threading.Event
    done: bool = False
    count: int = 0
    arrived: float = field(default_factory=time.perf_counter)

    def finish(self, item: Any = None) -> None:
        if not self.done:
            if item is not None:
                self.tokens.put(item)
            self.tokens.put(END)
            self.done = True


class Batcher:
    """One thread generating for a variant's waiting greedy requests, ``max_batch`` at a time."""

    def __init__(self, variant: Any, *, max_batch: int = MAX_BATCH, wait_s: float = WAIT_S) -> None:
        self.variant, self.max_batch, self.wait_s = variant, max(1, max_batch), max(0.0, wait_s)
        self.pending: queue.Queue[Request] = queue.Queue()
        self.batch_sizes: list[int] = []  # what ran, for the benchmark and the tests
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def submit(self, prompt_ids: Sequence[int], max_tokens: int, tokens: queue.Queue, cancel: threading.Event) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.variant.name}", daemon=True)
                self._thread.start()
        self.pending.put(Request(list(prompt_ids), max_tokens, tokens, cancel))

    def _collect(self) -> list[Request]:
        """The first waiting request and those that follow it closely: the window restarts at each arrival (clients
        that start "together" arrive spread over tens of ms on a busy machine), up to ``MAX_WAIT_WINDOWS`` windows."""
        batch = [self.pending.get()]
        cap = time.perf_counter() + MAX_WAIT_WINDOWS * self.wait_s
        deadline = min(cap, time.perf_counter() + self.wait_s)
        while len(batch) < self.max_batch:
            try:  # what queued up during the last batch is taken at once; then wait out the window
                batch.append(self.pending.get_nowait())
                deadline = min(cap, time.perf_counter() + self.wait_s)
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(self.pending.get(timeout=remaining))
                deadline = min(cap, time.perf_counter() + self.wait_s)
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            for r in batch:
                if r.cancel.is_set():
                    r.finish()
            batch = [r for r in batch if not r.done]
            if batch:
                self.batch_sizes.append(len(batch))
                self._generate(batch)

    def _generate(self, batch: list[Request]) -> None:
        from tunewise.lm.generate import stop_token_ids
        from tunewise.lm.shared_prefix import prefix_batch, supports_prefix_cache

        try:
            with self.variant.active() as model, torch.inference_mode():
                tokenizer = self.variant.tokenizer
                stops = stop_token_ids(tokenizer, model)
                pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
                rows = [r.prompt_ids for r in batch]
                inputs = prefix_batch(model, rows, pad) if len(rows) > 1 and supports_prefix_cache(model) else None
                if inputs is None:
                    inputs = _left_padded(rows, pad, next(model.parameters()).device)
                model.generate(
                    **inputs,
                    max_new_tokens=max(r.max_tokens for r in batch),
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=pad,
                    streamer=_RowStreamer(batch, set(stops)),
                    stopping_criteria=StoppingCriteriaList([_RowsDone(batch)]),
                )
        except BaseException as exc:  # each request's thread answers with the error
            log.exception("batched generation failed")
            for r in batch:
                r.finish(exc)
        finally:
            for r in batch:
                r.finish()


def _left_padded(rows: list[list[int]], pad: int, device: Any) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = [[pad] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return {"input_ids": torch.tensor(ids, device=device), "attention_mask": torch.tensor(mask, device=device)}


class _RowStreamer:
    """transformers streamer protocol: the first ``put`` is the prompts, then one token per row per step; each row's
    token goes to its request, which is answered once it reaches a stop token or its budget."""

    def __init__(self, batch: list[Request], stops: set[int]) -> None:
        self.batch, self.stops, self.prompt_seen = batch, stops, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for r, token in zip(self.batch, value.reshape(-1).tolist()):
            if r.done:
                continue
            if r.cancel.is_set():
                r.finish()
                continue
            r.tokens.put(int(token))
            r.count += 1
            if token in self.stops or r.count >= r.max_tokens:
                r.finish()

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """Per row: stop once its request is answered or its client is gone (the others go on)."""

    def __init__(self, batch: list[Request]) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = [r.done or r.cancel.is_set() for r in self.batch]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


_batchers: dict[int, tuple[Any, Batcher]] = {}
_batchers_lock = threading.Lock()


def batcher_for(variant: Any, *, max_batch: int = MAX_BATCH, wait_s: float = WAIT_S) -> Batcher:
    """The variant's batcher (one per variant object, started on its first request)."""
    with _batchers_lock:
        entry = _batchers.get(id(variant))
        if entry is None or entry[0] is not variant:
            entry = (variant, Batcher(variant, max_batch=max_batch, wait_s=wait_s))
            _batchers[id(variant)] = entry
        return entry[1]


def batchable(model: Any, temperature: float) -> bool:
    """Greedy requests on a model whose rows don't depend on each other (not LLM.int8 with outliers, not prompt
    tuning: see tunewise/lm/generate.py)."""
    from tunewise.lm.generate import batch_dependent
    from tunewise.lm.adapters import virtual_token_count

    return temperature <= 0 and not batch_dependent(model) and virtual_token_count(model) == 0
