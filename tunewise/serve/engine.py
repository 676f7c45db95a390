"""Generation for the server: streamed token by token, greedy requests batched (tunewise/serve/batching.py).

``model.generate`` runs in a worker thread and hands each new token to a queue (a transformers streamer); the
request's thread decodes the tokens incrementally, cuts the text at a stop string (holding back a possible start
of one, so no stop text is ever sent), and can cancel the generation (stop string found, client gone).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from tunewise.lm.generate import stop_token_ids
from tunewise.serve.variants import Variant

from tunewise.serve.batching import END as _END  # one sentinel for both paths


@dataclass
class GenerationParams:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None


@dataclass
class Generation:
    """Iterate to get text deltas; afterwards ``text``, ``finish_reason``, token counts and timings are set."""

    variant: Variant
    prompt_ids: list[int]
    params: GenerationParams
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    ttft_s: float | None = None
    started: float = field(default_factory=time.perf_counter)
    # perf: a greedy request joins the variant's dynamic batch (tunewise/serve/batching.py); None = its own generate
    batcher: Any = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def __iter__(self) -> Iterator[str]:
        tokens: queue.Queue = queue.Queue()
        worker = None
        if self.batcher is not None:
            self.batcher.submit(self.prompt_ids, self.params.max_tokens, tokens, self._cancel)
        else:
            worker = threading.Thread(target=self._run, args=(tokens,), daemon=True)
            worker.start()
        ids: list[int] = []
        stops = set(stop_token_ids(self.variant.tokenizer, self.variant.model))
        sent = 0  # characters of the decoded text already yielded
        try:
            while True:
                item = tokens.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if self.ttft_s is None:
                    self.ttft_s = time.perf_counter() - self.started
                self.completion_tokens += 1
                if item in stops:
                    self.finish_reason = "stop"
                    break
                ids.append(item)
                text = self.variant.tokenizer.decode(ids, skip_special_tokens=True)
                cut = _find_stop(text, self.params.stop)
                if cut is not None:
                    self.text, self.finish_reason = text[:cut], "stop"
                    if cut > sent:
                        yield text[sent:cut]
                    return
                safe = len(text) - _held_back(text, self.params.stop)
                if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
                    safe = min(safe, len(text) - 1)
                if safe > sent:
                    yield text[sent:safe]
                    sent = safe
                self.text = text
            self.text = self.variant.tokenizer.decode(ids, skip_special_tokens=True)
            if len(self.text) > sent:
                yield self.text[sent:]
            if self.finish_reason is None:
                self.finish_reason = "length" if self.completion_tokens >= self.params.max_tokens else "stop"
        finally:
            self._cancel.set()  # a consumer that stops early (stop string, client gone) ends the generation
            if worker is not None:
                worker.join()

    def run(self) -> "Generation":
        """Generate to the end without streaming."""
        for _ in self:
            pass
        return self

    @property
    def latency_s(self) -> float:
        return time.perf_counter() - self.started

    def _run(self, tokens: queue.Queue) -> None:
        try:
            with self.variant.active() as model, torch.inference_mode():
                device = next(model.parameters()).device
                p = self.params
                kwargs: dict[str, Any] = {"do_sample": False}
                if p.temperature > 0:
                    kwargs = {"do_sample": True, "temperature": p.temperature, "top_p": p.top_p}
                    if p.seed is not None:
                        torch.manual_seed(p.seed)
                model.generate(
                    input_ids=torch.tensor([self.prompt_ids], device=device),
                    attention_mask=torch.ones(1, len(self.prompt_ids), dtype=torch.long, device=device),
                    max_new_tokens=p.max_tokens,
                    eos_token_id=stop_token_ids(self.variant.tokenizer, model),
                    pad_token_id=self.variant.tokenizer.pad_token_id,
                    streamer=_QueueStreamer(tokens),
                    stopping_criteria=StoppingCriteriaList([_Cancelled(self._cancel)]),
                    **kwargs,
                )
        except BaseException as exc:  # handed to the request's thread, which answers with an error
            tokens.put(exc)
        finally:
            tokens.put(_END)


class _QueueStreamer:
    """transformers streamer protocol: the first ``put`` is the prompt, then one tensor per new token."""

    def __init__(self, tokens: queue.Queue) -> None:
        self.tokens, self.prompt_seen = tokens, False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            for token in value.reshape(-1).tolist():
                self.tokens.put(int(token))
        self.prompt_seen = True

    def end(self) -> None:
        pass


class _Cancelled(StoppingCriteria):
    """A stopping criterion that ends generation once the request no longer wants tokens."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that could be the start of a stop string (not sent yet)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest
