"""The JSON HTTP API (FastAPI, documented at /docs and /openapi.json): our own modes under /api/, and Riffusion's
`POST /run_inference/`, with its request and response shapes, so that Riffusion's web app can use this server."""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

import anyio.from_thread
from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, WrapValidator

from ..codec.audio import AUDIO_SUFFIXES
from ..errors import SpectrodiffError
from ..generation.jobs import JOBS, MAX_SEED, Job
from ..generation.musical import MAX_BPM, MIN_BPM
from ..settings import REFUSED, REQUIRED, error_words, quote_value, spec_of
from .service import (
    IMAGE_SUFFIXES,
    MAX_UPLOAD_BYTES,
    SERVER_CONTROLLED,
    SERVER_HIGHS,
    Busy,
    InvalidRequest,
    StoredResult,
    Studio,
    TooLarge,
)

# ---- requests: the job declarations themselves (spectrodiff/generation/jobs.py) ------------------------------------
# A JSON request is the mode's job, checked by its declaration with the server's tighter limits (SERVER_HIGHS), so
# that a bad value is answered (422) in the same words as on the command line. Like a batch line, a request names
# only its fields and gives each its own type: "bmp" or "bpm": "120" is refused, not dropped or converted (a JSON
# whole number still serves where a number is wanted).


def request_model(mode: str) -> type[Job]:
    """The JSON request of a mode: its job."""
    return JOBS[mode]


def request_body(mode: str) -> Any:
    """A mode's job as FastAPI reads a request's body: validated with the server's limits."""
    model = request_model(mode)
    return typing.Annotated[model, WrapValidator(
        lambda value, _: model.model_validate(value, context={"highs": SERVER_HIGHS}))]


def upload_parameters(mode: str) -> list[inspect.Parameter]:
    """Form fields of an upload mode (the audio comes as the file; what the server controls is not asked). Forms
    are text, so FastAPI reads their numbers; the job then checks them."""
    params = []
    for name, f in JOBS[mode].fields_in_order().items():
        if name in SERVER_CONTROLLED or f.annotation in (FilePath, FilePath | None):
            continue
        spec = spec_of(f)
        bounds = {} if f.annotation is str else {"minimum": spec.low, "maximum": SERVER_HIGHS.get(name, spec.high)}
        limits = {key: bound for key, bound in bounds.items() if bound is not None}
        form = Form(description=spec.help, json_schema_extra=limits or None)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        annotation=typing.Annotated[f.annotation, form],
                                        default=inspect.Parameter.empty if f.default is REQUIRED else f.default))
    return params


# ---- Riffusion's shapes ------------------------------------------------------------------------------------------
# Riffusion's server (dacite) answers 400 to a value of the wrong type or a missing one and ignores fields it does not
# know; so does this route (a JSON whole number still serves as a number: Riffusion's app sends guidance 7.0 as 7).
RIFFUSION_ROUTE = "/run_inference/"
RIFFUSION = ConfigDict(strict=True, extra="ignore")


class PromptInput(BaseModel):
    """One end of Riffusion's interpolation."""

    model_config = RIFFUSION

    prompt: str = Field(description="What to hear.")
    seed: int = Field(description="Noise seed.")
    negative_prompt: str | None = None
    denoising: float = Field(0.75, description="Img2img strength over the seed image.")
    guidance: float = Field(7.0, description="Classifier-free guidance scale.")

    def keyframe(self) -> dict:
        # Riffusion's server takes any seed torch does (64 bits, negative ones too; its app sends seed + 1 for the
        # end): those wrap to the job's 32 bits; others are refused with the job's range.
        seed = self.seed % (MAX_SEED + 1) if -2**63 <= self.seed < 2**64 else self.seed
        return {"prompt": self.prompt, "seed": seed, "strength": self.denoising, "guidance": self.guidance,
                "negative": self.negative_prompt or ""}


class InferenceInput(BaseModel):
    """Riffusion's request: `start` and `end` blended at `alpha`, grown from a named seed image."""

    model_config = RIFFUSION
    start: PromptInput
    end: PromptInput
    alpha: float = Field(description="0 is all start, 1 all end.")
    num_inference_steps: int = 50
    seed_image_id: str = Field("og_beat", max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                               description="A seed image's id (GET /api/info lists them).")
    mask_image_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]*$",
                                      description="A mask's id; empty or null: no mask (as Riffusion's server).")


class InferenceOutput(BaseModel):
    """Riffusion's response: a JPEG spectrogram and MP3 audio as data URLs, and the clip's length."""

    image: str
    audio: str
    duration_s: float


class ResultOutput(BaseModel):
    """A finished job: its files (fetch them from the URLs) and the settings that redo it."""

    id: str
    seconds: float
    audio_url: str
    image_url: str
    sidecar_url: str
    settings: dict


Upload = typing.Annotated[UploadFile, File(description="Audio (wav, flac, ogg, opus, mp3), at most 60 s and "
                                                        "25 MiB.")]
ImageUpload = typing.Annotated[UploadFile, File(description="A spectrogram PNG with its EXIF, at most 6001 columns "
                                                             "(60 s at 10 ms) and 25 MiB.")]
TempoField = typing.Annotated[float | None, Form(ge=MIN_BPM, le=MAX_BPM, description="The audio's tempo, for a "
                                                 "beat-time model (default: its WAV's acid chunk, else tracked).")]
ResultId = typing.Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
ResultKind = typing.Annotated[str, Path(pattern=r"^(audio|image|sidecar)$")]


def _result(stored: StoredResult) -> ResultOutput:
    base = f"/api/results/{stored.id}"
    return ResultOutput(id=stored.id, seconds=round(stored.seconds, 6), audio_url=f"{base}/audio",
                        image_url=f"{base}/image", sidecar_url=f"{base}/sidecar", settings=stored.record)


# The HTTP request itself, beside a route's declared fields: to notice a client that left.
_CONNECTION = inspect.Parameter("connection", inspect.Parameter.KEYWORD_ONLY, annotation=Request)


def _gone(connection: Request) -> Callable[[], bool]:
    """Whether the client has disconnected, asked from the worker thread that runs its job."""
    return lambda: anyio.from_thread.run(connection.is_disconnected)


def _json_route(studio: Studio, mode: str):
    """`POST /api/<mode>` taking the mode's JSON request."""

    async def route(request, connection: Request) -> ResultOutput:
        job = studio.job(mode, request.model_dump(exclude_unset=True))  # the server's choices and whole-clip limits
        return _result(await _in_thread(studio.perform, job, None, _gone(connection)))

    route.__signature__ = inspect.Signature([inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY,
                                                               annotation=request_body(mode)), _CONNECTION])
    return route


def _upload_route(studio: Studio, mode: str):
    """`POST /api/<mode>` taking the audio as a file and the mode's other fields as form fields."""
    async def route(file: UploadFile, connection: Request, **fields) -> ResultOutput:
        with await _upload(studio, file) as audio:
            job = studio.job(mode, {"audio": audio, **{k: v for k, v in fields.items() if v is not None}})
            return _result(await _in_thread(studio.perform, job, None, _gone(connection)))

    route.__signature__ = inspect.Signature([inspect.Parameter("file", inspect.Parameter.KEYWORD_ONLY,
                                                               annotation=Upload), _CONNECTION,
                                             *upload_parameters(mode)])
    return route


async def _upload(studio: Studio, file: UploadFile,
                  kinds: tuple[str, ...] = AUDIO_SUFFIXES) -> contextlib.AbstractContextManager[FilePath]:
    """An uploaded file kept for the request (reading one byte past the limit, so that an oversized one is
    refused)."""
    return studio.upload(file.filename or "", await file.read(MAX_UPLOAD_BYTES + 1), kinds)


def api_router(studio: Studio) -> APIRouter:
    router = APIRouter()

    @router.post(RIFFUSION_ROUTE, response_model=InferenceOutput, tags=["riffusion"])
    async def run_inference(request: InferenceInput, connection: Request) -> InferenceOutput:
        """Riffusion's inference: one clip from a seed image, the two prompts blended at `alpha`."""

        def infer() -> InferenceOutput:
            stored = studio.riffuse(request.start.keyframe(), request.end.keyframe(), request.alpha,
                                    request.seed_image_id, request.mask_image_id, request.num_inference_steps,
                                    gone=_gone(connection))
            return InferenceOutput(image=stored.data_url("image", "JPEG"), audio=stored.data_url("audio", "MP3"),
                                   duration_s=round(stored.seconds, 6))

        return await _in_thread(infer)

    @router.get("/api/info", tags=["studio"])
    def info() -> dict:
        """The model, its spectrogram parameters, the seed image ids and the request limits."""
        return studio.model_info()

    for mode in ("generate", "morph", "compose"):
        router.post(f"/api/{mode}", response_model=ResultOutput, tags=["studio"], summary=JOBS[mode].__doc__,
                    name=mode)(_json_route(studio, mode))
    for mode in ("remix", "extend", "inpaint"):
        router.post(f"/api/{mode}", response_model=ResultOutput, tags=["studio"], summary=JOBS[mode].__doc__,
                    name=mode)(_upload_route(studio, mode))

    @router.post("/api/audio-to-image", response_class=FileResponse, tags=["spectrogram tools"])
    async def audio_to_image(file: Upload, connection: Request, bpm: TempoField = None) -> FileResponse:
        """Uploaded audio -> its spectrogram PNG (the model's parameters, in EXIF)."""
        with await _upload(studio, file) as audio:
            path = await _in_thread(studio.audio_to_image, audio, bpm, _gone(connection))
        return FileResponse(path, media_type="image/png", filename=path.name)

    @router.post("/api/image-to-audio", response_class=FileResponse, tags=["spectrogram tools"])
    async def image_to_audio(file: ImageUpload, connection: Request) -> FileResponse:
        """An uploaded spectrogram PNG -> WAV (Griffin-Lim, the image's own parameters)."""
        with await _upload(studio, file, IMAGE_SUFFIXES) as image:
            path = await _in_thread(studio.image_to_audio, image, _gone(connection))
        return FileResponse(path, media_type="audio/wav", filename=path.name)

    @router.get("/api/results/{result_id}/{kind}", tags=["studio"])
    def result_file(result_id: ResultId, kind: ResultKind) -> FileResponse:
        """A result's audio (WAV), image (PNG) or sidecar (JSON)."""
        try:
            stored = studio.result(result_id)
        except KeyError:
            raise HTTPException(404, f"no result {result_id} (results are kept until the server stops, the "
                                     "newest 200 only)") from None
        media = {"audio": "audio/wav", "image": "image/png", "sidecar": "application/json"}[kind]
        return FileResponse(stored.path(kind), media_type=media, filename=stored.files[kind])

    return router


async def _in_thread(function, *args):
    """Run a blocking job off the event loop (uploads are read asynchronously, generation is not)."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def install_error_handlers(app: FastAPI) -> None:
    """Clear one-line messages: bad input is a 4xx, a full queue a 503 with Retry-After."""

    @app.exception_handler(Busy)
    async def busy(_: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "10"})

    @app.exception_handler(TooLarge)
    async def too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    def refused(request: Request) -> int:
        """A request's settings refused: 422, or 400 as Riffusion's server answers on its route."""
        return 400 if request.url.path == RIFFUSION_ROUTE else 422

    @app.exception_handler(InvalidRequest)
    async def invalid_request(request: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=refused(request))

    @app.exception_handler(SpectrodiffError)
    async def bad_input(_: Request, exc: SpectrodiffError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        lines = []
        for e in exc.errors():
            *within, name = [str(p) for p in e["loc"] if p != "body"] or [""]
            if e["type"] in (REFUSED, "string_unicode"):  # a value the declaration refuses: as everywhere else
                lines.append(error_words({**e, "loc": tuple(p for p in e["loc"] if p != "body")}))
            elif e["type"] == "extra_forbidden":  # worded as a batch line's
                lines.append(f"{'.'.join(within) + ': ' if within else ''}unknown field {quote_value(name)}")
            else:
                lines.append(f"{'.'.join([*within, name])}: {e['msg']}")
        return JSONResponse({"detail": "; ".join(lines)}, status_code=refused(request))
