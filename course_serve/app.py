"""The FastAPI application: ``create_app()`` builds it (``uvicorn --factory`` calls it).

Routes: ``POST /classify``, ``POST /generate`` (JSON, or server-sent events with
``"stream": true``), ``GET /health`` (what is served), ``/health/live`` and ``/health/ready``
(probes), ``GET /metrics`` (Prometheus); the OpenAPI schema at ``/openapi.json`` documents every
field and status code, and ``/docs`` is the interactive page. The models load once, when the
server starts (the lifespan); a missing checkpoint stops the start-up with a clear message.

Each route is a *lane*: its own :class:`~course_serve.batching.MicroBatcher` and inference
thread, so a quick classification never waits behind long generations. A request is admitted or
refused at once (503 when its lane is full), given up when its deadline passes (504) or its
client disconnects, and its work is cancelled then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, images
from .batching import MicroBatcher, Overloaded
from .inference import GenerateJob, Models
from .metrics import Metrics, RequestMetrics
from .settings import Settings


def a_number(value):
    """JSON numbers only: pydantic's lax mode would take true as 1 and "5" as 5."""
    if isinstance(value, (bool, str)):
        raise ValueError("must be a JSON number, not true/false or a string")
    return value  # 29.0 is the integer 29, as JSON Schema says; 29.5 is not


def number(kind: type, **limits):
    """``kind`` (int or float) within ``limits``, from JSON numbers only (limits first, so the
    schema shows them as minimum and maximum)."""
    return Annotated[kind, Field(**limits), BeforeValidator(a_number)]


Pixel = number(float, ge=0, le=255, allow_inf_nan=False)
Row = Annotated[list[Pixel], Field(min_length=images.SIDE, max_length=images.SIDE)]


class PixelsRequest(BaseModel):
    """A 28x28 grey image as JSON (the ``application/json`` body of ``POST /classify``)."""

    model_config = ConfigDict(extra="forbid")
    pixels: list[Row] = Field(
        min_length=images.SIDE,
        max_length=images.SIDE,
        description="28 rows of 28 grey levels, 0 (black) to 255 (white); as in MNIST the digit "
        "is light on a dark background.",
    )


class ClassifyResponse(BaseModel):
    digit: int = Field(ge=0, le=9, description="The most probable digit.")
    probabilities: list[float] = Field(
        min_length=10, max_length=10, description="P(digit = 0), ..., P(digit = 9); they sum to 1."
    )


class GenerateRequest(BaseModel):
    """What to continue and how to sample (the JSON body of ``POST /generate``)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, description="The text to continue. Every character must be "
                        "in the model's vocabulary (GET /health lists its size; Tiny "
                        "Shakespeare's 65 characters: letters, the digit 3, punctuation, "
                        "space, newline).", examples=["ROMEO:\n"])  # fmt: skip
    max_new_tokens: number(int) = Field(
        100,
        ge=1,
        description="How many characters to generate (at most the server's "
        "COURSE_SERVE_MAX_NEW_TOKENS, 500 by default; left out: 100, or that limit if lower).",
    )
    temperature: number(float) = Field(
        0.8,
        ge=0,
        le=10,
        allow_inf_nan=False,
        description="Divides the logits: 0 is greedy (always the most likely character), 1 "
        "samples the model's distribution, higher is more random.",
    )
    top_k: number(int, ge=1) | None = Field(
        None, description="Sample among the k most likely characters only; null keeps them all."
    )
    seed: number(int, ge=0, le=2**63 - 1) | None = Field(
        None,
        description="Random seed: the same seed and settings give the same text. "
        "Null picks one (returned).",
    )
    stream: bool = Field(False, strict=True, description="true: answer with server-sent events "
                         "(text/event-stream): a `token` event per character as soon as it is "
                         "generated, then one `done` event with this route's JSON answer (or an "
                         "`error` event).")  # fmt: skip


class GenerateResponse(BaseModel):
    text: str = Field(description="The generated characters (the prompt is not repeated).")
    new_tokens: int = Field(description="How many characters were generated.")
    seed: int = Field(description="The seed used: send it again to get the same text.")


class Health(BaseModel):
    status: str = Field(description="`ready`, or `overloaded` while a lane is full (the same "
                        "answer as GET /health/ready).")  # fmt: skip
    device: str = Field(description="Where the models run: cpu, cuda or mps.")
    models: dict = Field(description="Per model: its checkpoint path, parameter count and (GPT) "
                         "vocabulary size, context length and held-out loss.")  # fmt: skip
    batching: dict = Field(description="Whether server-side batching is on, its window (ms) and "
                           "max_batch, and per route (lane) the requests, batches, largest and "
                           "mean batch so far, and the requests pending now.")  # fmt: skip
    limits: dict = Field(description="max_body_bytes, max_new_tokens, max_prompt_chars, "
                         "max_pending and request_timeout_s.")  # fmt: skip


class Probe(BaseModel):
    status: str = Field(description="`alive`; `ready` or `overloaded`.")


class Problem(BaseModel):
    detail: str = Field(description="What was wrong with the request, and how to fix it.")


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "integer"}}}  # fmt: skip
ERRORS = {
    400: {
        "model": Problem,
        "description": "The body cannot be read: not UTF-8, or a bad Content-Length header.",
    },  # fmt: skip
    413: {"model": Problem, "description": "The body is larger than COURSE_SERVE_MAX_BODY_BYTES."},
    415: {"model": Problem, "description": "A content type this route does not read."},
    422: {"model": Problem, "description": "The request is not valid; `detail` says why."},
    500: {
        "model": Problem,
        "description": "A bug in the server, never the client's fault; the "
        "connection is closed (`Connection: close`).",
    },  # fmt: skip
    503: {
        "model": Problem,
        "headers": RETRY_AFTER,
        "description": "The route already holds "
        "COURSE_SERVE_MAX_PENDING requests: retry after `Retry-After` seconds.",
    },  # fmt: skip
    504: {
        "model": Problem,
        "description": "Not answered within COURSE_SERVE_REQUEST_TIMEOUT_S; "
        "the work was cancelled.",
    },  # fmt: skip
}
TOKEN_EVENT = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string", "description": "One new character."}},
}


def sse_event(name: str, data: dict) -> dict:
    """One server-sent event's schema: its name and its JSON data."""
    return {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    }}  # fmt: skip


STREAM = {
    "description": 'With `"stream": true`, server-sent events: a `token` event per character, '
    "then `done` (the JSON answer) or `error` (a Problem).",
    "schema": {"oneOf": [sse_event("token", TOKEN_EVENT),
                         sse_event("done", {"$ref": "#/components/schemas/GenerateResponse"}),
                         sse_event("error", {"$ref": "#/components/schemas/Problem"})]},
}  # fmt: skip


def classify_body(max_bytes: int) -> dict:
    """The OpenAPI request body of /classify (three ways to send one image)."""
    png = {"type": "string", "format": "binary",
           "description": f"A 28x28 PNG image; the whole body at most {max_bytes:,} bytes "
           "(COURSE_SERVE_MAX_BODY_BYTES), larger gets 413."}  # fmt: skip
    form = {"type": "object", "required": ["file"], "properties": {"file": png}}
    return {
        "required": True,
        "description": "One 28x28 grey image: PNG bytes, a form upload of a PNG (field `file`), "
        "or JSON pixels.",
        "content": {
            "image/png": {"schema": png},
            "multipart/form-data": {"schema": form},
            "application/json": {"schema": PixelsRequest.model_json_schema()},
        },
    }


# --------------------------------------------------------------------------- limits and errors


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before any route reads it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_big = JSONResponse({"detail": f"the body is larger than the limit of {self.max_bytes:,}"
                                " bytes (COURSE_SERVE_MAX_BODY_BYTES)."}, 413)  # fmt: skip
        if not declared.isdigit():
            return await JSONResponse({"detail": "bad Content-Length header."}, 400)(
                scope, receive, send
            )
        if int(declared) > self.max_bytes:
            return await too_big(scope, receive, send)
        body, more = b"", True
        while more:  # read it all (also chunked bodies without a length), counting
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await too_big(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def describe(errors: list[dict]) -> str:
    """One readable line for a list of pydantic errors."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", error.get("msg"))
            parts.append(f"malformed JSON ({reason}): send a valid JSON object")
        else:
            parts.append(f"{where or 'body'}: {error.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


PARSE_ERROR = "There was an error parsing the body"  # FastAPI's words for a body it cannot read


def add_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error):
        return JSONResponse({"detail": describe(error.errors())}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        detail = error.detail
        if error.status_code == 400 and detail == PARSE_ERROR:
            detail = "the body cannot be read: send JSON encoded in UTF-8."
        return JSONResponse({"detail": detail}, error.status_code, headers=error.headers)

    @app.exception_handler(images.BadImage)
    async def bad_image(request, error):
        return JSONResponse({"detail": str(error)}, error.status)

    @app.exception_handler(Exception)
    async def unexpected(request, error):  # a bug, not the client's fault; the worker lives on
        return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, 500,
                            headers={"Connection": "close"})  # fmt: skip


# --------------------------------------------------------------------------- the application


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    models, metrics = Models(settings), app.state.metrics

    def generate(jobs):
        new = models.generate(jobs)
        metrics.tokens.inc(sum(map(len, new)))
        return new

    app.state.models, app.state.lanes, executors = models, {}, []
    for name, fn in (("classify", models.classify), ("generate", generate)):
        executors.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix=name))
        app.state.lanes[name] = MicroBatcher(fn, executors[-1], window_s=settings.batch_window_ms
                                             / 1000, max_batch=settings.max_batch,
                                             max_pending=settings.max_pending)  # fmt: skip
        metrics.watch(name, app.state.lanes[name])
    try:
        yield
    finally:  # uvicorn has let the requests in flight finish (up to the grace period)
        for lane in app.state.lanes.values():
            await lane.close(timeout=settings.shutdown_grace_s)
        for executor in executors:
            executor.shutdown(wait=False, cancel_futures=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service; settings from the environment unless given."""
    app = FastAPI(
        title="course_serve",
        version=__version__,
        summary="Chapter 08: the course's MNIST CNN and character GPT behind an HTTP API.",
        lifespan=lifespan,
    )
    app.state.settings = settings or Settings.from_env()
    app.state.metrics = Metrics()
    app.add_middleware(BodyLimit, max_bytes=app.state.settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    add_error_handlers(app)
    add_routes(app)
    add_health_routes(app)
    app.openapi = lambda: exact_schema(app)
    return app


def exact_schema(app: FastAPI) -> dict:
    """FastAPI's schema, with this server's limits and the model's vocabulary in it (a client,
    or a schema-driven test, then knows every rule a valid request must follow)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                             routes=app.routes)  # fmt: skip
        settings, fields = app.state.settings, schema["components"]["schemas"]["GenerateRequest"]
        prompt = fields["properties"]["prompt"]
        prompt["maxLength"] = settings.max_prompt_chars
        fields["properties"]["max_new_tokens"]["maximum"] = settings.max_new_tokens
        models = getattr(app.state, "models", None)
        if models is None:  # asked before the models loaded: the limits only, not cached
            return schema
        chars = "".join("\\" + c if c in "\\]^-[" else c for c in models.tokenizer.chars)
        prompt["pattern"] = "^[" + chars.replace("\n", "\\n") + "]+$"
        app.openapi_schema = schema
    return app.openapi_schema


# ------------------------------------------------------------------- admission and deadlines


def admit(request: Request, lane: str, item) -> asyncio.Future:
    """Queue ``item`` on ``lane``, or answer 503 with Retry-After when the lane is full."""
    try:
        return request.app.state.lanes[lane].submit(item)
    except Overloaded as error:
        request.app.state.metrics.rejected.labels(lane).inc()
        raise HTTPException(503, f"the server is busy ({error}); retry in a second.",
                            headers={"Retry-After": "1"}) from None  # fmt: skip


def give_up(request: Request, lane: str, future: asyncio.Future, item, reason: str) -> None:
    """Stop waiting for ``item``: drop it if queued, stop its generation if running."""
    future.cancel()
    if isinstance(item, GenerateJob):
        item.cancelled.set()
    request.app.state.metrics.cancelled.labels(lane, reason).inc()


async def disconnected(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer(request: Request, lane: str, item):
    """The result of ``item`` on ``lane``: 503 when full, 504 after the deadline; a client that
    disconnects stops the work."""
    future = admit(request, lane, item)
    watcher = asyncio.ensure_future(disconnected(request))
    timeout = request.app.state.settings.request_timeout_s
    try:
        done, _ = await asyncio.wait({future, watcher}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        watcher.cancel()
    if future in done:
        return future.result()
    reason = "disconnect" if watcher in done else "deadline"
    give_up(request, lane, future, item, reason)
    if reason == "disconnect":  # nobody reads this; nginx's "client closed request" for the logs
        return Response(status_code=499)
    raise HTTPException(504, f"not answered within {timeout:g} s (COURSE_SERVE_REQUEST_TIMEOUT_S);"
                        " ask for fewer tokens or try again later.")  # fmt: skip


def event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def stream(request: Request, job: GenerateJob) -> StreamingResponse:
    """Server-sent events: each new character as it is generated, then ``done``."""
    loop, tokens = asyncio.get_running_loop(), asyncio.Queue()
    job = dataclasses.replace(
        job, on_token=lambda t: loop.call_soon_threadsafe(tokens.put_nowait, t)
    )
    future = admit(request, "generate", job)  # 503 before any byte of the stream is sent
    future.add_done_callback(lambda _: tokens.put_nowait(None))
    decode, timeout = (
        request.app.state.models.tokenizer.decode,
        request.app.state.settings.request_timeout_s,
    )

    async def events():
        end, new = loop.time() + timeout, []
        try:
            while (token := await asyncio.wait_for(tokens.get(), end - loop.time())) is not None:
                new.append(token)
                yield event("token", {"text": decode([token])})
            if future.exception() is not None:
                yield event(
                    "error", {"detail": f"internal error ({type(future.exception()).__name__})"}
                )
            else:
                yield event("done", {"text": decode(new), "new_tokens": len(new), "seed": job.seed})
        except asyncio.TimeoutError:
            give_up(request, "generate", future, job, "deadline")
            yield event(
                "error",
                {"detail": f"not finished within {timeout:g} s (COURSE_SERVE_REQUEST_TIMEOUT_S)."},
            )
        finally:  # the client left (the stream was cancelled) or it is over: stop the work
            if not future.done():
                give_up(request, "generate", future, job, "disconnect")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})  # fmt: skip


async def read_image(request: Request):
    """The 28x28 image of a /classify request, whatever way it was sent."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "image/png":
        return images.from_png(await request.body())
    if kind == "application/json":
        try:
            pixels = PixelsRequest.model_validate_json(await request.body()).pixels
        except ValidationError as error:
            raise HTTPException(422, describe(error.errors())) from None
        return images.from_pixels(pixels)
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception:
            message = "malformed multipart body: send one PNG in the field 'file'."
            raise HTTPException(422, message) from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "no file in the form: send the PNG in the field 'file'.")
        return images.from_png(await upload.read())
    raise HTTPException(415, f"cannot read Content-Type {kind or '(none)'!r}: send image/png, "
                        "multipart/form-data (field 'file') or application/json.")  # fmt: skip


def check_prompt(app: FastAPI, body: GenerateRequest) -> GenerateJob:
    """The generation job for a request, or a 422 that says what is over the limits."""
    settings, tokenizer = app.state.settings, app.state.models.tokenizer
    if len(body.prompt) > settings.max_prompt_chars:
        raise HTTPException(422, f"prompt too long: {len(body.prompt):,} characters; this server "
                            f"takes at most {settings.max_prompt_chars:,}.")  # fmt: skip
    if "max_new_tokens" not in body.model_fields_set:  # the default, capped by this server
        body = body.model_copy(update={"max_new_tokens": min(100, settings.max_new_tokens)})
    if body.max_new_tokens > settings.max_new_tokens:
        raise HTTPException(422, f"too many tokens: max_new_tokens={body.max_new_tokens}; "
                            f"this server generates at most {settings.max_new_tokens} per "
                            "request.")  # fmt: skip
    unknown = sorted(set(body.prompt) - tokenizer.stoi.keys())
    if unknown:
        raise HTTPException(422, f"unknown characters {unknown[:20]} in the prompt; the "
                            f"model knows only these {tokenizer.vocab_size}: "
                            f"{tokenizer.chars!r}.")  # fmt: skip
    seed = body.seed if body.seed is not None else secrets.randbits(62)
    return GenerateJob(tuple(tokenizer.encode(body.prompt)), body.max_new_tokens,
                       body.temperature, body.top_k, seed)  # fmt: skip


def add_routes(app: FastAPI) -> None:
    codes = (400, 413, 422, 500, 503, 504)
    max_bytes = app.state.settings.max_body_bytes

    @app.post("/classify", response_model=ClassifyResponse,
              responses={c: ERRORS[c] for c in (*codes, 415)},
              openapi_extra={"requestBody": classify_body(max_bytes)})  # fmt: skip
    async def classify(request: Request) -> ClassifyResponse:
        """The digit in a 28x28 grey image (chapter 02's CNN), with all ten probabilities."""
        probabilities = await answer(request, "classify", await read_image(request))
        if isinstance(probabilities, Response):  # the client went away
            return probabilities
        digit = max(range(10), key=probabilities.__getitem__)
        return ClassifyResponse(digit=digit, probabilities=probabilities)

    @app.post("/generate", response_model=GenerateResponse,
              responses={200: {"content": {"text/event-stream": STREAM}},
                         **{c: ERRORS[c] for c in codes}})  # fmt: skip
    async def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        """Continue a prompt with chapter 04's character GPT (JSON, or a stream of events)."""
        job = check_prompt(app, body)
        if body.stream:
            return stream(request, job)
        new = await answer(request, "generate", job)
        if isinstance(new, Response):
            return new
        text = app.state.models.tokenizer.decode(new)
        return GenerateResponse(text=text, new_tokens=len(new), seed=job.seed)


def add_health_routes(app: FastAPI) -> None:
    def readiness() -> str:
        return "overloaded" if any(lane.full for lane in app.state.lanes.values()) else "ready"

    @app.get("/health/live", response_model=Probe)
    async def live() -> dict:
        """Liveness: the process answers (restart it when this fails)."""
        return {"status": "alive"}

    @app.get("/health/ready", response_model=Probe,
             responses={503: {"model": Probe, "headers": RETRY_AFTER, "description":
                              "A lane is full: send traffic elsewhere for now."}})  # fmt: skip
    async def ready():
        """Readiness: the models are loaded and every lane has room (route traffic here)."""
        status = readiness()
        if status == "ready":
            return {"status": status}
        return JSONResponse({"status": status}, 503, headers={"Retry-After": "1"})

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus' text format."}})  # fmt: skip
    async def metrics() -> Response:
        """Counters and histograms for Prometheus (course_serve.metrics lists them)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        """What is served: readiness, models, device, batching settings and counters, limits."""
        settings, lanes = app.state.settings, app.state.lanes
        return {
            "status": readiness(),
            "device": str(app.state.models.device),
            "models": app.state.models.info,
            "batching": {"enabled": lanes["classify"].enabled,
                         "window_ms": settings.batch_window_ms, "max_batch": settings.max_batch,
                         **{name: lane.stats() for name, lane in lanes.items()}},
            "limits": {name: getattr(settings, name) for name in (
                "max_body_bytes", "max_new_tokens", "max_prompt_chars", "max_pending",
                "request_timeout_s")},
        }  # fmt: skip
