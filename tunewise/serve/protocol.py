"""The OpenAI wire format: request bodies (validated with pydantic), error bodies, and response objects."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message text; content parts must all be text parts."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        texts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"content parts of type {part.get('type')!r} are not supported; send text",
                               param="messages", code="invalid_value")
            texts.append(part["text"])
        return "".join(texts)


SEED_RANGE = (-(2**63), 2**63 - 1)  # what torch.manual_seed takes (2**70 overflowed into an HTTP 500)


class _Request(BaseModel):
    # OpenAI fields this server ignores (logit_bias, ...) are accepted; NaN / Infinity (which Python's JSON parser
    # reads) are refused with a 400 naming the parameter
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    user: str | None = None
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise APIError(400, "at most 4 stop sequences are allowed", param="stop", code="invalid_value")
        return [s for s in stops if s]

    def requested_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def user_id(self) -> str | None:
        return self.user or self.safety_identifier


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str]

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, "send one prompt per request (a list of exactly one string)", param="prompt",
                           code="invalid_value")
        return self.prompt[0]


class FeedbackRequest(BaseModel):
    """tunewise's extension: on an earlier response ``id``, a score in [0, 1], a reference answer, a thumbs ``rating``
    (up / down) and/or a ``preferred`` alternative answer (``tunewise data from-feedback`` turns the last two into KTO
    or DPO data)."""

    model_config = ConfigDict(allow_inf_nan=False)

    id: str
    score: float | None = Field(None, ge=0, le=1)
    reference: str | None = None
    rating: Literal["up", "down"] | None = None
    preferred: str | None = Field(None, min_length=1)
    comment: str | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(id: str, model: str, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason,
                     "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens), "system_fingerprint": None,
    }


def chat_chunk(id: str, model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}


def completion_response(id: str, model: str, text: str, finish_reason: str | None, prompt_tokens: int | None = None,
                        completion_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        body["usage"] = usage(prompt_tokens, completion_tokens)
    return body


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "tunewise"}
