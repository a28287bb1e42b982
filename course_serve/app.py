"""The FastAPI application: ``create_app()`` builds it (``uvicorn --factory`` calls it).

Routes: ``POST /classify``, ``POST /generate``, ``GET /health``; the OpenAPI schema at
``/openapi.json`` documents every field, and ``/docs`` is the interactive page. The models load
once, when the server starts (the lifespan); a missing checkpoint stops the start-up with a clear
message. Inference runs on one thread behind two :class:`~course_serve.batching.MicroBatcher`.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__, images
from .batching import MicroBatcher
from .inference import GenerateJob, Models
from .settings import Settings

Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False)]
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
    max_new_tokens: int = Field(100, ge=1, description="How many characters to generate (at most "
                                "the server's COURSE_SERVE_MAX_NEW_TOKENS, 500 by default; "
                                "left out: 100, or that limit if lower).")  # fmt: skip
    temperature: float = Field(0.8, ge=0, le=10, allow_inf_nan=False, description="Divides the "
                               "logits: 0 is greedy (always the most likely character), 1 samples "
                               "the model's distribution, higher is more random.")  # fmt: skip
    top_k: int | None = Field(None, ge=1, description="Sample among the k most likely characters "
                              "only; null keeps them all.")  # fmt: skip
    seed: int | None = Field(
        None,
        strict=True,  # an integer: true, false and "5" are not seeds
        ge=0,
        le=2**63 - 1,
        description="Random seed: the same seed and settings give the same text. "
        "Null picks one (returned).",
    )


class GenerateResponse(BaseModel):
    text: str = Field(description="The generated characters (the prompt is not repeated).")
    new_tokens: int = Field(description="How many characters were generated.")
    seed: int = Field(description="The seed used: send it again to get the same text.")


class Health(BaseModel):
    status: str = Field(description="`ok` once the models are loaded (a readiness probe).")
    device: str = Field(description="Where the models run: cpu, cuda or mps.")
    models: dict = Field(description="Per model: its checkpoint path, parameter count and (GPT) "
                         "vocabulary size, context length and held-out loss.")  # fmt: skip
    batching: dict = Field(description="Whether server-side batching is on, its window (ms) and "
                           "max_batch, and per route the requests, batches, largest and mean "
                           "batch so far.")  # fmt: skip
    limits: dict = Field(description="max_body_bytes, max_new_tokens and max_prompt_chars.")


class Problem(BaseModel):
    detail: str = Field(description="What was wrong with the request, and how to fix it.")


ERRORS = {
    413: {"model": Problem, "description": "The body is larger than COURSE_SERVE_MAX_BODY_BYTES."},
    415: {"model": Problem, "description": "A content type this route does not read."},
}
FILE_FIELD = {"type": "string", "format": "binary", "description": "A 28x28 PNG image."}
CLASSIFY_BODY = {
    "required": True,
    "description": "One 28x28 grey image: PNG bytes, a form upload of a PNG (field `file`), or "
    "JSON pixels.",
    "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": FILE_FIELD}}
        },
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


def add_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error):
        return JSONResponse({"detail": describe(error.errors())}, 422)

    @app.exception_handler(images.BadImage)
    async def bad_image(request, error):
        return JSONResponse({"detail": str(error)}, error.status)

    @app.exception_handler(Exception)
    async def unexpected(request, error):  # a bug, not the client's fault; the worker lives on
        return JSONResponse({"detail": f"internal error ({type(error).__name__})"}, 500)


# --------------------------------------------------------------------------- the application


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    models = Models(settings)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    options = dict(window_s=settings.batch_window_ms / 1000, max_batch=settings.max_batch)
    app.state.models = models
    app.state.classify = MicroBatcher(models.classify, executor, **options)
    app.state.generate = MicroBatcher(models.generate, executor, **options)
    try:
        yield
    finally:
        await app.state.classify.close()
        await app.state.generate.close()
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
    app.add_middleware(BodyLimit, max_bytes=app.state.settings.max_body_bytes)
    add_error_handlers(app)
    add_routes(app)
    return app


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
    bad = {422: {"model": Problem, "description": "The request is not valid; `detail` says why."}}

    @app.post("/classify", response_model=ClassifyResponse, responses={**ERRORS, **bad},
              openapi_extra={"requestBody": CLASSIFY_BODY})  # fmt: skip
    async def classify(request: Request) -> ClassifyResponse:
        """The digit in a 28x28 grey image (chapter 02's CNN), with all ten probabilities."""
        probabilities = await app.state.classify.submit(await read_image(request))
        digit = max(range(10), key=probabilities.__getitem__)
        return ClassifyResponse(digit=digit, probabilities=probabilities)

    @app.post("/generate", response_model=GenerateResponse, responses={413: ERRORS[413], **bad})
    async def generate(body: GenerateRequest) -> GenerateResponse:
        """Continue a prompt with chapter 04's character GPT."""
        job = check_prompt(app, body)
        new = await app.state.generate.submit(job)
        text = app.state.models.tokenizer.decode(new)
        return GenerateResponse(text=text, new_tokens=len(new), seed=job.seed)

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        """Liveness and what is served: models, device, batching settings and counters, limits."""
        settings = app.state.settings
        return {
            "status": "ok",
            "device": str(app.state.models.device),
            "models": app.state.models.info,
            "batching": {
                "enabled": app.state.classify.enabled,
                "window_ms": settings.batch_window_ms,
                "max_batch": settings.max_batch,
                "classify": app.state.classify.stats(),
                "generate": app.state.generate.stats(),
            },
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "max_new_tokens": settings.max_new_tokens,
                "max_prompt_chars": settings.max_prompt_chars,
            },
        }
