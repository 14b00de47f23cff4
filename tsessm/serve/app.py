"""The HTTP face of a `ForecastService`: a FastAPI app, usable in process (any ASGI client) or
under uvicorn (`tsessm serve`).

    POST /observations        {"records": [{"id": "a", "time": "2024-01-13T12:00:00", "load": 1.2, ...}, ...]}
                              (or a bare JSON list of records) -> {"applied", "filled", "duplicates"};
                              ?forecast=true adds the touched series' forecasts
    GET  /forecast/{id}       {"id", "time", "forecast": {target: [v_1..v_H]}} (+ "interval" when the model has one)
    GET  /forecast            {"forecasts": [...]} for every series posted
    GET  /health              {"status": "ok", ...} (never needs the token)
    GET  /metrics             Prometheus text exposition

Errors are JSON, `{"error": "<one line>"}` (bad records add "errors": [{"index", "error"}] and
"applied"): 400 unreadable JSON, 401 missing or wrong bearer token, 404 unknown series or route,
405 wrong method, 413 body over --max-body-bytes or more than --max-records records, 422 bad records
or a body of the wrong shape, 500 anything else (no traceback, no paths: the log has the details).
"""
from __future__ import annotations

import hmac
import json
import math
import time
import traceback
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tsessm.serve.metrics import CONTENT_TYPE, Metrics
from tsessm.serve.service import ForecastService, Refused

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB
DEFAULT_MAX_RECORDS = 10_000
OPEN_PATHS = ("/health",)  # answered without the token
KNOWN_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")


def route_of(path: str) -> str:
    """The metrics label of a path: its route, so series ids do not multiply the series of metrics."""
    if path.startswith("/forecast/"):
        return "/forecast/{id}"
    return path if path in ("/observations", "/forecast", "/health", "/metrics") else "other"


async def _send_json(send: Callable, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Front:
    """Pure ASGI middleware in front of every route: the bearer token, the body-size limit by
    Content-Length, the request metrics, and a JSON 500 for whatever escapes (no traceback)."""

    def __init__(self, app: Any, *, metrics: Metrics, token: str | None, max_body_bytes: int,
                 log: Callable[[str], None]) -> None:
        self.app, self.metrics, self.max_body_bytes, self.log = app, metrics, max_body_bytes, log
        self.expected = b"Bearer " + token.encode("utf-8") if token else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]
        started = [False]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0], started[0] = message["status"], True
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                await _send_json(sending, *refusal)
            else:
                await self.app(scope, receive, sending)
        except Exception as exc:
            self.log(f"internal error on {scope.get('method')} {route_of(scope.get('path', ''))}: "
                     f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            if not started[0]:
                await _send_json(sending, 500, {"error": f"internal error ({type(exc).__name__}); see the server log"})
        finally:
            method = scope.get("method", "")  # a made-up method must not add a metrics series
            method = method if method in KNOWN_METHODS else "other"
            self.metrics.observe_request(method, route_of(scope.get("path", "")), status[0],
                                         time.perf_counter() - start)

    def _refuse(self, scope: dict) -> tuple | None:
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and scope.get("path") not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                why = "missing bearer token" if not given else "wrong bearer token"
                return 401, {"error": f"{why}: send 'Authorization: Bearer <token>'"}, [(b"www-authenticate", b"Bearer")]
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, {"error": "Content-Length is not a number"}
            if size > self.max_body_bytes:
                return 413, {"error": f"body of {size} bytes is over the limit of {self.max_body_bytes} bytes "
                                      "(--max-body-bytes); post fewer records per request"}
        return None


def build_app(service: ForecastService, *, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
              max_records: int = DEFAULT_MAX_RECORDS, log: Callable[[str], None] | None = None) -> FastAPI:
    """The FastAPI app serving `service`. `token`: when given, every route but /health needs
    `Authorization: Bearer <token>` (compared in constant time)."""
    log = log or (lambda message: None)
    metrics = Metrics(service.metric_samples)
    app = FastAPI(title="tsessm serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service, app.state.metrics = service, metrics

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": exc.message, **exc.details}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.post("/observations")
    async def observations(request: Request, forecast: bool = False) -> JSONResponse:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise Refused(413, f"body over the limit of {max_body_bytes} bytes (--max-body-bytes)")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(400, f"the body is not JSON ({exc})") from None
        except RecursionError:
            raise Refused(400, "the body is JSON nested too deeply") from None
        records = payload.get("records") if isinstance(payload, dict) else payload
        if not isinstance(records, list):
            raise Refused(422, 'the body must be {"records": [record, ...]} or a JSON list of records')
        if len(records) > max_records:
            raise Refused(413, f"{len(records)} records are over the limit of {max_records} per request "
                               "(--max-records)")
        return JSONResponse(service.post(records, with_forecasts=forecast))

    @app.get("/forecast/{series_id}")
    async def forecast_one(series_id: str, coverage: float | None = None) -> JSONResponse:
        return JSONResponse(service.forecast(series_id, _coverage(coverage)))

    @app.get("/forecast")
    async def forecast_all(coverage: float | None = None) -> JSONResponse:
        return JSONResponse({"forecasts": service.forecasts(_coverage(coverage))})

    @app.get("/health")
    async def health() -> JSONResponse:
        # open to all: with a token set it says only that the service is up
        return JSONResponse({"status": "ok"} if token else service.health())

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(Front, metrics=metrics, token=token, max_body_bytes=max_body_bytes, log=log)
    return app


def _coverage(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 < value < 1):
        raise Refused(422, f"coverage must be between 0 and 1, got {value}")
    return value
