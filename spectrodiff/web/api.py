"""The JSON HTTP API (FastAPI, documented at /docs and /openapi.json): our own modes under /api/, and Riffusion's
`POST /run_inference/`, with its request and response shapes, so that Riffusion's web app can use this server."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

import anyio.from_thread
from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, create_model

from ..codec.audio import AUDIO_SUFFIXES
from ..errors import SpectrodiffError
from ..generation.jobs import JOBS, KEYFRAME_TYPES, REQUIRED, Keyframe, Spec
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

# ---- request schemas, made from the job declarations (spectrodiff/generation/jobs.py) ------------------------------
# Types, defaults and help come from the declarations; ranges are checked by the jobs themselves, so that a bad
# value is answered (400) in the same words as on the command line; the schema documents them.


def _field(name: str, kind: Any, default: Any, spec: Spec) -> tuple[Any, Any]:
    high = SERVER_HIGHS.get(name, spec.high)
    limits = {} if isinstance(kind, type) and kind is str else {
        **({"minimum": spec.low} if spec.low is not None else {}), **({"maximum": high} if high is not None else {})}
    return kind, Field(... if default is REQUIRED else default, description=spec.help,
                       json_schema_extra=limits or None)


KeyframeInput = create_model("KeyframeInput", **{
    f.name: _field(f.name, KEYFRAME_TYPES[f.name], f.default, f.metadata["spec"])
    for f in Keyframe.__dataclass_fields__.values()})


def request_model(mode: str) -> type[BaseModel]:
    """The JSON request of a mode: its job's fields, less what the server controls and files."""
    fields = {}
    for name, f in JOBS[mode].fields().items():
        kind = f.type
        if name in SERVER_CONTROLLED or kind in (FilePath, FilePath | None):
            continue
        if typing.get_origin(kind) is tuple:
            kind = list[KeyframeInput]
        elif kind is Keyframe:
            kind = KeyframeInput
        fields[name] = _field(name, kind, f.default, f.metadata["spec"])
    return create_model(f"{mode.title()}Request", **fields)


def upload_parameters(mode: str) -> list[inspect.Parameter]:
    """Form fields of an upload mode (the audio comes as the file)."""
    params = []
    for name, f in JOBS[mode].fields().items():
        if name in SERVER_CONTROLLED or f.type is FilePath:
            continue
        kind, info = _field(name, f.type, f.default, f.metadata["spec"])
        form = Form(description=info.description, json_schema_extra=info.json_schema_extra)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=typing.Annotated[kind, form],
                                        default=inspect.Parameter.empty if f.default is REQUIRED else f.default))
    return params


# ---- Riffusion's shapes ------------------------------------------------------------------------------------------

class PromptInput(BaseModel):
    """One end of Riffusion's interpolation."""

    prompt: str = Field(description="What to hear.")
    seed: int = Field(description="Noise seed.")
    negative_prompt: str | None = None
    denoising: float = Field(0.75, description="Img2img strength over the seed image.")
    guidance: float = Field(7.0, description="Classifier-free guidance scale.")

    def keyframe(self) -> dict:
        return {"prompt": self.prompt, "seed": self.seed, "strength": self.denoising, "guidance": self.guidance,
                "negative": self.negative_prompt or ""}


class InferenceInput(BaseModel):
    """Riffusion's request: `start` and `end` blended at `alpha`, grown from a named seed image."""

    start: PromptInput
    end: PromptInput
    alpha: float = Field(description="0 is all start, 1 all end.")
    num_inference_steps: int = 50
    seed_image_id: str = Field("og_beat", max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    mask_image_id: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


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
    model = request_model(mode)

    async def route(request, connection: Request) -> ResultOutput:
        job = studio.job(mode, request.model_dump(exclude_unset=True))
        return _result(await _in_thread(studio.run, job, None, _gone(connection)))

    route.__signature__ = inspect.Signature([inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY,
                                                               annotation=model), _CONNECTION])
    return route


def _upload_route(studio: Studio, mode: str):
    """`POST /api/<mode>` taking the audio as a file and the mode's other fields as form fields."""
    async def route(file: UploadFile, connection: Request, **fields) -> ResultOutput:
        audio = await _upload(studio, file)
        job = studio.job(mode, {"audio": audio, **{k: v for k, v in fields.items() if v is not None}})
        return _result(await _in_thread(studio.run, job, None, _gone(connection)))

    route.__signature__ = inspect.Signature([inspect.Parameter("file", inspect.Parameter.KEYWORD_ONLY,
                                                               annotation=Upload), _CONNECTION,
                                             *upload_parameters(mode)])
    return route


async def _upload(studio: Studio, file: UploadFile, kinds: tuple[str, ...] = AUDIO_SUFFIXES) -> FilePath:
    """Keep an uploaded file (reading one byte past the limit, so that an oversized one is refused)."""
    return studio.save_upload(file.filename or "", await file.read(MAX_UPLOAD_BYTES + 1), kinds)


def api_router(studio: Studio) -> APIRouter:
    router = APIRouter()

    @router.post("/run_inference/", response_model=InferenceOutput, tags=["riffusion"])
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
    async def audio_to_image(file: Upload) -> FileResponse:
        """Uploaded audio -> its spectrogram PNG (the model's parameters, in EXIF)."""
        path = await _in_thread(studio.audio_to_image, await _upload(studio, file))
        return FileResponse(path, media_type="image/png", filename=path.name)

    @router.post("/api/image-to-audio", response_class=FileResponse, tags=["spectrogram tools"])
    async def image_to_audio(file: ImageUpload) -> FileResponse:
        """An uploaded spectrogram PNG -> WAV (Griffin-Lim, the image's own parameters)."""
        path = await _in_thread(studio.image_to_audio, await _upload(studio, file, IMAGE_SUFFIXES))
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

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_: Request, exc: InvalidRequest) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(SpectrodiffError)
    async def bad_input(_: Request, exc: SpectrodiffError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        lines = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(lines)}, status_code=422)
