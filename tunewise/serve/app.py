"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/chat/completions, /v1/completions (streaming too),
and tunewise's /v1/feedback. Every answered request is logged per variant; every bad request gets an OpenAI-style
JSON error with its status code, and no request can take the server down.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunewise.lm.chat import render_prompt
from tunewise.serve.batching import MAX_BATCH, WAIT_S, batchable, batcher_for
from tunewise.serve.engine import Generation, GenerationParams
from tunewise.serve.logs import ERRORS, FEEDBACK, RequestLog
from tunewise.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    FeedbackRequest,
    chat_chunk,
    chat_response,
    completion_response,
    model_card,
    new_id,
)
from tunewise.serve.split import TrafficSplit
from tunewise.serve.variants import Variant

log = logging.getLogger(__name__)


MAX_BODY_BYTES = 4 * 2**20  # the default request size limit (4 MiB: a ~1M-character prompt)


class Server:
    """The state behind the routes: variants, the split, limits and the request log."""

    def __init__(self, variants: Mapping[str, Variant], log_dir: str | Path, *, split: TrafficSplit | None = None,
                 max_tokens: int = 512, default_max_tokens: int = 128, max_body_bytes: int = MAX_BODY_BYTES,
                 max_batch: int = MAX_BATCH, batch_wait_s: float = WAIT_S) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"the request size limit must be at least 1 byte, got {max_body_bytes}")
        self.max_body_bytes = max_body_bytes
        if split is not None:
            unknown = [v for v in split.weights if v not in variants]
            if unknown:
                raise ValueError(f"the traffic split names {unknown}, which are not served; served: {', '.join(variants)}")
            if split.name in variants:
                raise ValueError(f"the split's name {split.name!r} is also a variant's name; pick another with --ab-name")
        self.variants = dict(variants)
        self.split = split
        self.max_tokens, self.default_max_tokens = max_tokens, min(default_max_tokens, max_tokens)
        self.log = RequestLog(log_dir)
        self.created = int(time.time())
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_s  # perf: dynamic batching (1 = off)

    def batcher(self, variant: Variant, params: GenerationParams) -> Any:
        """The variant's dynamic batcher for a request with ``params``; None when it is generated alone."""
        if self.max_batch <= 1 or not batchable(variant.model, params.temperature):
            return None
        return batcher_for(variant, max_batch=self.max_batch, wait_s=self.batch_wait_s)

    def route(self, model: str, user: str | None) -> tuple[Variant, str]:
        """(variant, assignment) for a request's ``model``: a variant's name, or the split's name."""
        if model in self.variants:
            return self.variants[model], "explicit"
        if self.split is not None and model == self.split.name:
            name, how = self.split.choose(user)
            return self.variants[name], how
        names = ", ".join([*self.variants, *([self.split.name] if self.split else [])])
        raise APIError(404, f"The model `{model}` does not exist. Models served here: {names}", param="model",
                       code="model_not_found")

    def budget(self, variant: Variant, requested: int | None, n_prompt: int, param: str) -> int:
        """How many tokens to generate; a request over the server's or the model's limit is refused."""
        if requested is not None and requested > self.max_tokens:
            raise APIError(400, f"max_tokens is too large: {requested}. This server allows at most {self.max_tokens} "
                           "completion tokens (its --max-tokens option)", param="max_tokens", code="invalid_value")
        room = variant.context_length - n_prompt
        if room < 1 or (requested is not None and requested > room):
            raise APIError(400, f"This model's maximum context length is {variant.context_length} tokens. However, you "
                           f"requested {n_prompt + (requested or 1)} tokens ({n_prompt} in the {param}, "
                           f"{requested or 1} in the completion). Please reduce the length of the {param} or completion.",
                           param=param, code="context_length_exceeded")
        return requested if requested is not None else min(self.default_max_tokens, room)


def _params(req: Any, max_tokens: int) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=req.temperature or 0.0, top_p=req.top_p or 1.0,
                            stop=req.stops(), seed=req.seed)


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class BodyTooLarge(StarletteHTTPException):
    """Raised while a request body is read, once it passes the limit (the rest is never read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this server's limit of {limit:,} bytes (its "
                              "--max-body-mb option); send a shorter prompt")


class BodyLimit:
    """ASGI middleware: a request whose Content-Length is above ``limit`` gets 413 before any of its body is read;
    a body without one (chunked) is counted as it arrives and cut off with 413 once it passes the limit. Starlette
    reads whole bodies into memory: without this a 20 MB prompt took 42 s to be refused and kept 1.4 GB.

    FastAPI >= 0.16x has ``FastAPI(max_body_size=...)`` (Starlette's RequestBodyLimitMiddleware); this works with
    every FastAPI tunewise supports (>= 0.115), refuses before the route runs, and answers in the OpenAI error shape."""

    def __init__(self, app: Any, limit: int, refuse: Any) -> None:
        self.app, self.limit, self.refuse = app, limit, refuse

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.limit):
            await self.refuse(scope, send)
            return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="tunewise", docs_url=None, redoc_url=None)
    app.state.server = server

    async def refuse_large(scope: Any, send: Any) -> None:
        exc = BodyTooLarge(server.max_body_bytes)
        error = APIError(413, str(exc.detail), code="request_too_large")
        server.log.write(ERRORS, {"path": scope.get("path"), "status": 413, **error.body()["error"]})
        body = json.dumps(error.body()).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    app.add_middleware(BodyLimit, limit=server.max_body_bytes, refuse=refuse_large)

    def error_response(request: Request, exc: APIError) -> JSONResponse:
        server.log.write(ERRORS, {"path": request.url.path, "status": exc.status, **exc.body()["error"]})
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "missing" and param is None:
            error = APIError(400, "The request body is empty: send a JSON object with the request's parameters, e.g. "
                             '{"model": "base", "messages": [{"role": "user", "content": "Hi"}]}', code="empty_body")
        elif first.get("type") == "missing":
            error = APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
        elif first.get("type") == "json_invalid" or param is None:
            error = APIError(400, "We could not parse the body of your request as a JSON object. Send valid JSON with "
                             "Content-Type: application/json.", code="invalid_json")
        else:
            got = first.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {str(got)[:80]})"  # 2**70, nan, -5, ...
            error = APIError(400, f"Invalid value for '{param}': {first.get('msg')}{shown}", param=param,
                             code="invalid_value")
        return error_response(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return error_response(request, APIError(413, str(exc.detail), code="request_too_large"))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(request, APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                                code=code))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error answering %s", request.url.path)
        return error_response(request, APIError(500, f"the server failed on this request: {type(exc).__name__}: {exc}",
                                                type="server_error"))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "variants": list(server.variants)}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        names = [*server.variants, *([server.split.name] if server.split else [])]
        return {"object": "list", "data": [model_card(n, server.created) for n in names]}

    @app.get("/v1/models/{model}")
    def get_model(model: str) -> dict[str, Any]:
        if model not in server.variants and not (server.split and model == server.split.name):
            raise APIError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")
        return model_card(model, server.created)

    def answer(req: Any, endpoint: str, prompt_ids: list[int], variant: Variant, assignment: str,
               request_record: dict[str, Any], param: str) -> Any:
        if req.n != 1:
            raise APIError(400, "n must be 1: this server returns one choice per request", param="n", code="invalid_value")
        max_tokens = server.budget(variant, req.requested_tokens(), len(prompt_ids), param)
        chat = endpoint == "chat.completions"
        rid = new_id("chatcmpl" if chat else "cmpl")
        params = _params(req, max_tokens)
        generation = Generation(variant, prompt_ids, params, batcher=server.batcher(variant, params))
        record = {"id": rid, "variant": variant.name, "requested_model": req.model, "assignment": assignment,
                  "endpoint": endpoint, "user": req.user_id, "stream": req.stream,
                  "request": {**request_record, "max_tokens": max_tokens, "temperature": req.temperature,
                              "top_p": req.top_p, "stop": req.stops() or None, "seed": req.seed},
                  "metadata": req.metadata}
        headers = {"x-tunewise-variant": variant.name}

        def finish(status: int = 200, error: str | None = None) -> None:
            server.log.write(variant.name, {**record, "response": generation.text, "finish_reason": generation.finish_reason,
                                            "prompt_tokens": len(prompt_ids),
                                            "completion_tokens": generation.completion_tokens,
                                            "latency_s": round(generation.latency_s, 6),
                                            "ttft_s": None if generation.ttft_s is None else round(generation.ttft_s, 6),
                                            "status": status, "error": error})

        if not req.stream:
            generation.run()
            finish()
            body = (chat_response if chat else completion_response)(
                rid, variant.name, generation.text, generation.finish_reason or "stop", len(prompt_ids),
                generation.completion_tokens)
            return JSONResponse(body, headers=headers)

        include_usage = bool((req.stream_options or {}).get("include_usage"))

        def events() -> Iterator[str]:
            status, error = 200, None
            try:
                if chat:
                    yield _sse(chat_chunk(rid, variant.name, {"role": "assistant", "content": ""}))
                for delta in generation:
                    yield _sse(chat_chunk(rid, variant.name, {"content": delta}) if chat
                               else completion_response(rid, variant.name, delta, None))
                reason = generation.finish_reason or "stop"
                yield _sse(chat_chunk(rid, variant.name, {}, reason) if chat
                           else completion_response(rid, variant.name, "", reason))
                if include_usage:
                    usage = chat_response(rid, variant.name, "", reason, len(prompt_ids), generation.completion_tokens)
                    yield _sse({**usage, "object": "chat.completion.chunk" if chat else "text_completion",
                                "choices": []})
                yield "data: [DONE]\n\n"
            except GeneratorExit:
                status, error = 499, "client closed the stream"
                raise
            except Exception as exc:  # mid-stream: the status is already sent, so the error goes in the stream
                log.exception("error while streaming %s", rid)
                status, error = 500, f"{type(exc).__name__}: {exc}"
                yield _sse(APIError(500, f"generation failed: {error}", type="server_error").body())
            finally:
                finish(status, error)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatCompletionRequest) -> Any:
        variant, assignment = server.route(req.model, req.user_id)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        try:
            prompt = render_prompt(messages, variant.tokenizer)
        except Exception as exc:  # the chat template rejects this conversation (e.g. roles out of order)
            raise APIError(400, f"the model's chat template can't render these messages: {exc}", param="messages",
                           code="invalid_value") from None
        ids = variant.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return answer(req, "chat.completions", ids, variant, assignment, {"messages": messages}, "messages")

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> Any:
        variant, assignment = server.route(req.model, req.user_id)
        text = req.prompt_text()
        ids = variant.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt", code="invalid_value")
        return answer(req, "completions", ids, variant, assignment, {"prompt": text}, "prompt")

    @app.post("/v1/feedback")
    def feedback(req: FeedbackRequest) -> dict[str, Any]:
        if req.score is None and req.reference is None and req.rating is None and req.preferred is None:
            raise APIError(400, "send a score (0 to 1), a reference answer, a rating (up or down) or a preferred "
                           "answer", param="score", code="invalid_value")
        variant = server.log.variant_of(req.id)
        if variant is None:
            raise APIError(404, f"no response with id {req.id!r} was served by this server", param="id",
                           code="response_not_found")
        server.log.write(FEEDBACK, {"id": req.id, "variant": variant, "score": req.score, "reference": req.reference,
                                    "rating": req.rating, "preferred": req.preferred, "comment": req.comment})
        return {"object": "feedback", "id": req.id, "variant": variant}

    return app
