"""`tunewise ui`: the dashboard's FastAPI app. Pages are static HTML + plain JavaScript from tunewise/ui/static (no
build step, nothing fetched from the network); data comes from the JSON and server-sent-event routes below, which
read runs through RunDir and the CLI's own readers."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel

from tunewise.catalog import LANGUAGES, messages, resolve_language
from tunewise.config import ConfigError
from tunewise.rundir import RunDir
from tunewise.ui.jobs import Jobs, check, config_fields
from tunewise.ui.playground import Playground
from tunewise.ui.runs import RunIndex, warnings_of

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "runs.html", "/run": "run.html", "/compare": "compare.html", "/playground": "playground.html",
         "/new": "new.html"}


class ConfigEdit(BaseModel):
    path: str
    values: dict[str, str] = {}


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


def create_app(runs_folder: str | Path, *, configs: list[Path] | None = None, lang: str = "en",
               poll_s: float = 0.5) -> FastAPI:
    """The dashboard over the runs in ``runs_folder``; ``configs``: config files (or folders of them) the new-run
    page offers besides each run's own config.yaml."""
    runs_folder = Path(runs_folder)
    index, jobs, playground = RunIndex(runs_folder), Jobs(runs_folder), Playground()
    default_lang = resolve_language(lang)
    # fill the row cache while the browser opens: the first listing of a large folder computes every checklist
    threading.Thread(target=index.rows, name="tunewise-ui-warm", daemon=True).start()
    app = FastAPI(title="tunewise", docs_url=None, redoc_url=None, openapi_url=None)

    def language(request: Request) -> str:
        try:
            return resolve_language(request.query_params.get("lang") or default_lang)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    def run_path(name: str) -> Path:
        try:
            return index.path(name)
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None

    def config_choices() -> list[dict[str, str]]:
        found: list[Path] = []
        for place in configs or []:
            found.extend(sorted(place.glob("*.yaml")) + sorted(place.glob("*.yml")) if place.is_dir() else [place])
        if runs_folder.is_dir():
            found.extend(RunDir.of(p).config for p in sorted(runs_folder.iterdir()) if RunDir.of(p).config.is_file())
        return [{"path": str(p), "label": f"{p.parent.name}/{p.name}"} for p in found if p.is_file()]

    def allowed_config(path: str) -> Path:
        if path not in {c["path"] for c in config_choices()}:
            raise HTTPException(404, f"{path} is not one of the configs this dashboard offers")
        return Path(path)

    for route, page in PAGES.items():
        app.add_api_route(route, (lambda page=page: FileResponse(STATIC / page)), methods=["GET"], include_in_schema=False)

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        path = STATIC / name
        if "/" in name or not path.is_file():
            raise HTTPException(404, f"no static file {name}")
        return FileResponse(path)

    @app.get("/api/messages")
    def api_messages(request: Request) -> dict[str, Any]:
        lang = language(request)
        return {"lang": lang, "languages": list(LANGUAGES), "messages": messages(lang)}

    @app.get("/api/runs")
    def api_runs() -> dict[str, Any]:
        return {"folder": str(runs_folder), "runs": index.rows()}

    @app.get("/api/runs/{name}")
    def api_run(name: str, request: Request) -> dict[str, Any]:
        from tunewise.checklist import checklist
        from tunewise.monitor.follow import MetricsTail

        path = run_path(name)
        run = RunDir.of(path)
        records = MetricsTail(run.metrics).read()

        def load(p: Path) -> Any:
            try:
                return json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None

        return {"row": index.row(path), "checklist": checklist(path, language(request)), "warnings": warnings_of(records),
                "summary": load(run.summary), "comparison": load(run.comparison), "record": load(run.record),
                "has_report": run.report.is_file()}

    @app.get("/api/runs/{name}/metrics")
    def api_metrics(name: str) -> dict[str, Any]:
        from tunewise.monitor.follow import MetricsTail

        return {"records": MetricsTail(RunDir.of(run_path(name)).metrics).read()}

    @app.get("/api/runs/{name}/metrics/stream")
    async def api_metrics_stream(name: str, request: Request) -> StreamingResponse:
        """metrics.jsonl as server-sent events: "records" (the file so far, then each batch appended), "reset" when
        the file was cut back (a resume), "end" once the run is no longer active and everything was sent."""
        from tunewise.monitor.follow import MetricsTail, run_is_active

        path = run_path(name)
        tail = MetricsTail(RunDir.of(path).metrics)

        async def events() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                active = run_is_active(path)
                metrics = tail.path
                if metrics.is_file() and metrics.stat().st_size < tail.offset:
                    yield _sse("reset", {})
                records = tail.read()
                if records:
                    yield _sse("records", records)
                if not active:
                    yield _sse("end", {"status": (json.loads(RunDir.of(path).record.read_text(encoding="utf-8"))
                                                  if RunDir.of(path).record.is_file() else {}).get("status")})
                    return
                await asyncio.sleep(poll_s)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/runs/{name}/files/{rel:path}")
    def run_file(name: str, rel: str) -> FileResponse:
        """A file of the run (the report, the checklist's evidence); nothing outside the run directory."""
        root = run_path(name).resolve()
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            raise HTTPException(404, f"{rel} is not a file of run {name}")
        media = "text/plain; charset=utf-8" if path.suffix in (".jsonl", ".yaml", ".log", ".md") else None
        return FileResponse(path, media_type=media)

    @app.post("/api/runs/{name}/cancel")
    def api_cancel(name: str) -> dict[str, Any]:
        try:
            return jobs.cancel(run_path(name))
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/runs/{name}/resume")
    def api_resume(name: str) -> dict[str, Any]:
        return jobs.resume(run_path(name))

    @app.get("/api/configs")
    def api_configs() -> dict[str, Any]:
        return {"configs": config_choices()}

    @app.get("/api/config")
    def api_config(path: str) -> dict[str, Any]:
        try:
            return {"path": path, "fields": config_fields(allowed_config(path))}
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.post("/api/config/check")
    def api_check(edit: ConfigEdit) -> dict[str, Any]:
        return check(allowed_config(edit.path), edit.values, runs_folder)

    @app.post("/api/config/estimate")
    def api_estimate(edit: ConfigEdit) -> dict[str, Any]:
        try:
            return jobs.estimate(allowed_config(edit.path), edit.values)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.post("/api/runs")
    def api_start(edit: ConfigEdit) -> dict[str, Any]:
        try:
            return jobs.start(allowed_config(edit.path), edit.values)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/playground/{name}/variants")
    def api_variants(name: str) -> dict[str, Any]:
        try:
            variants, config = playground.variants(run_path(name))
        except (FileNotFoundError, ValueError, ConfigError) as exc:
            raise HTTPException(400, str(exc)) from None
        return {"variants": list(variants), "max_tokens": config.eval.max_new_tokens}

    @app.get("/api/playground/{name}/stream")
    def api_generate(name: str, variant: str, prompt: str, max_tokens: int | None = None) -> StreamingResponse:
        path = run_path(name)

        def events() -> Iterator[str]:  # a sync iterator: Starlette runs it in a worker thread
            try:
                for event in playground.stream(path, variant, prompt, max_tokens):
                    yield _sse("done" if event.get("done") else "delta", event)
            except Exception as exc:  # noqa: BLE001 - shown next to the answer
                yield _sse("failed", {"error": str(exc)})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    return app


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8765, log_level: str = "warning") -> None:
    """Serve until Ctrl-C; open event streams are closed within a second or two of it."""
    import uvicorn

    from tunewise.serve.server import bind

    sock = bind(host, port)
    uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=2)).run(sockets=[sock])
