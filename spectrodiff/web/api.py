"""The JSON HTTP API (FastAPI, documented at /docs and /openapi.json): our own modes under /api/, and Riffusion's
`POST /run_inference/`, with its request and response shapes, so that Riffusion's web app can use this server."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from ..codec.audio import AUDIO_SUFFIXES
from ..errors import SpectrodiffError
from ..generation.timeline import DEFAULT_GUIDANCE, Keyframe
from .service import (
    IMAGE_SUFFIXES,
    MAX_KEYFRAMES,
    MAX_PROMPT_CHARS,
    MAX_SECONDS,
    MAX_STEPS,
    MAX_UPLOAD_BYTES,
    Busy,
    StoredResult,
    Studio,
    TooLarge,
)

Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to hear.")]
Negative = Annotated[str, Field(max_length=MAX_PROMPT_CHARS, description="What not to hear.")]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Noise seed.")]
Guidance = Annotated[float, Field(ge=0, le=50, description="Classifier-free guidance scale.")]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS, description="Denoising steps.")]
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, description="Length in seconds.")]
ImageId = Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


# ---- Riffusion's shapes ------------------------------------------------------------------------------------------

class PromptInput(BaseModel):
    """One end of Riffusion's interpolation."""

    prompt: Prompt
    seed: Seed
    negative_prompt: Negative | None = None
    denoising: float = Field(0.75, gt=0, le=1, description="Img2img strength over the seed image.")
    guidance: Guidance = DEFAULT_GUIDANCE

    def keyframe(self) -> Keyframe:
        return Keyframe(self.prompt, seed=self.seed, strength=self.denoising, guidance=self.guidance,
                        negative=self.negative_prompt or "")


class InferenceInput(BaseModel):
    """Riffusion's request: `start` and `end` blended at `alpha`, grown from a named seed image."""

    start: PromptInput
    end: PromptInput
    alpha: float = Field(ge=0, le=1, description="0 is all start, 1 all end.")
    num_inference_steps: Steps = 50
    seed_image_id: ImageId = "og_beat"
    mask_image_id: ImageId | None = None


class InferenceOutput(BaseModel):
    """Riffusion's response: a JPEG spectrogram and MP3 audio as data URLs, and the clip's length."""

    image: str
    audio: str
    duration_s: float


# ---- our shapes ----------------------------------------------------------------------------------------------------

class KeyframeInput(BaseModel):
    prompt: Prompt
    seed: Seed = 0
    guidance: Guidance = DEFAULT_GUIDANCE
    negative: Negative = ""
    seconds: Seconds | None = Field(None, description="Span it holds in a composition.")

    def keyframe(self) -> Keyframe:
        return Keyframe(self.prompt, seed=self.seed, guidance=self.guidance, negative=self.negative,
                        seconds=self.seconds)


class GenerateInput(BaseModel):
    prompt: Prompt
    seed: Seed = 0
    guidance: Guidance = DEFAULT_GUIDANCE
    negative: Negative = ""
    seconds: Seconds = 5.12
    loop: bool = Field(True, description="A seamless loop (else a plain clip).")
    steps: Steps = 25


class MorphInput(BaseModel):
    keyframes: list[KeyframeInput] = Field(min_length=2, max_length=MAX_KEYFRAMES)
    seconds: Seconds = 20.0
    steps: Steps = 25


class ComposeInput(BaseModel):
    keyframes: list[KeyframeInput] = Field(min_length=1, max_length=MAX_KEYFRAMES,
                                           description="Each with its seconds.")
    transition: float = Field(2.0, ge=0, le=MAX_SECONDS)
    steps: Steps = 25


class ResultOutput(BaseModel):
    """A finished job: its files (fetch them from the URLs) and the settings that redo it."""

    id: str
    seconds: float
    audio_url: str
    image_url: str
    sidecar_url: str
    settings: dict


# Form fields of the upload endpoints (module level: FastAPI resolves these annotations by name).
Upload = Annotated[UploadFile, File(description="Audio (wav, flac, ogg, mp3), at most 60 s and 25 MiB.")]
ImageUpload = Annotated[UploadFile, File(description="A spectrogram PNG with its EXIF.")]
FormPrompt = Annotated[str, Form(min_length=1, max_length=MAX_PROMPT_CHARS)]
FormSeed = Annotated[int, Form(ge=0, le=2**32 - 1)]
FormGuidance = Annotated[float, Form(ge=0, le=50)]
FormNegative = Annotated[str, Form(max_length=MAX_PROMPT_CHARS)]
FormSteps = Annotated[int, Form(ge=1, le=MAX_STEPS)]
Strength = Annotated[float, Form(gt=0, le=1)]
FormSeconds = Annotated[float, Form(gt=0, le=MAX_SECONDS)]
SpanStart = Annotated[float, Form(ge=0)]
SpanEnd = Annotated[float, Form(gt=0)]
ResultId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
ResultKind = Annotated[str, Path(pattern=r"^(audio|image|sidecar)$")]


def _result(stored: StoredResult) -> ResultOutput:
    base = f"/api/results/{stored.id}"
    return ResultOutput(id=stored.id, seconds=round(stored.seconds, 6), audio_url=f"{base}/audio",
                        image_url=f"{base}/image", sidecar_url=f"{base}/sidecar", settings=stored.record)


async def _upload(studio: Studio, file: UploadFile, kinds: tuple[str, ...] = AUDIO_SUFFIXES) -> FilePath:
    """Keep an uploaded file (reading one byte past the limit, so that an oversized one is refused)."""
    return studio.save_upload(file.filename or "", await file.read(MAX_UPLOAD_BYTES + 1), kinds)


def api_router(studio: Studio) -> APIRouter:
    router = APIRouter()

    @router.post("/run_inference/", response_model=InferenceOutput, tags=["riffusion"])
    def run_inference(request: InferenceInput) -> InferenceOutput:
        """Riffusion's inference: one clip from a seed image, the two prompts blended at `alpha`."""
        stored = studio.riffuse(request.start.keyframe(), request.end.keyframe(), request.alpha,
                                request.seed_image_id, request.mask_image_id, request.num_inference_steps)
        return InferenceOutput(image=stored.data_url("image", "JPEG"), audio=stored.data_url("audio", "MP3"),
                               duration_s=round(stored.seconds, 6))

    @router.get("/api/info", tags=["studio"])
    def info() -> dict:
        """The model, its spectrogram parameters, the seed image ids and the request limits."""
        return studio.model_info()

    @router.post("/api/generate", response_model=ResultOutput, tags=["studio"])
    def generate(request: GenerateInput) -> ResultOutput:
        """Text -> a clip (by default a seamless loop)."""
        keyframe = Keyframe(request.prompt, seed=request.seed, guidance=request.guidance, negative=request.negative)
        return _result(studio.generate(keyframe, request.seconds, request.loop, request.steps))

    @router.post("/api/morph", response_model=ResultOutput, tags=["studio"])
    def morph(request: MorphInput) -> ResultOutput:
        """Morph through the keyframes across one clip of `seconds`."""
        return _result(studio.morph([k.keyframe() for k in request.keyframes], request.seconds, request.steps))

    @router.post("/api/compose", response_model=ResultOutput, tags=["studio"])
    def compose(request: ComposeInput) -> ResultOutput:
        """A timeline of keyframes, each holding its seconds, blended over `transition` at the boundaries."""
        return _result(studio.compose([k.keyframe() for k in request.keyframes], request.transition, request.steps))

    @router.post("/api/remix", response_model=ResultOutput, tags=["studio"])
    async def remix(file: Upload, prompt: FormPrompt, strength: Strength = 0.6,
                    seed: FormSeed = 0, guidance: FormGuidance = DEFAULT_GUIDANCE, negative: FormNegative = "",
                    steps: FormSteps = 25) -> ResultOutput:
        """Re-imagine the uploaded audio in the prompt's style."""
        audio = await _upload(studio, file)
        keyframe = Keyframe(prompt, seed=seed, strength=strength, guidance=guidance, negative=negative)
        return _result(await _in_thread(studio.remix, audio, keyframe, steps))

    @router.post("/api/extend", response_model=ResultOutput, tags=["studio"])
    async def extend(file: Upload, prompt: FormPrompt, seconds: FormSeconds,
                     seed: FormSeed = 0, guidance: FormGuidance = DEFAULT_GUIDANCE, negative: FormNegative = "",
                     steps: FormSteps = 25) -> ResultOutput:
        """Continue the uploaded audio by `seconds`."""
        audio = await _upload(studio, file)
        keyframe = Keyframe(prompt, seed=seed, guidance=guidance, negative=negative)
        return _result(await _in_thread(studio.extend, audio, keyframe, seconds, steps))

    @router.post("/api/inpaint", response_model=ResultOutput, tags=["studio"])
    async def inpaint(file: Upload, prompt: FormPrompt, start: SpanStart, end: SpanEnd, seed: FormSeed = 0,
                      guidance: FormGuidance = DEFAULT_GUIDANCE, negative: FormNegative = "",
                      steps: FormSteps = 25) -> ResultOutput:
        """Regenerate the span [start, end) seconds of the uploaded audio."""
        audio = await _upload(studio, file)
        keyframe = Keyframe(prompt, seed=seed, guidance=guidance, negative=negative)
        return _result(await _in_thread(studio.inpaint, audio, keyframe, start, end, steps))

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
    """Clear one-line messages: bad input is a 4xx, a full queue a 503 with Retry-After. A request body declared
    larger than an upload may be is refused before it is read."""

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 2**20:  # the file plus its form fields
            return JSONResponse({"detail": f"the request is larger than allowed: uploads of at most "
                                           f"{MAX_UPLOAD_BYTES // 2**20} MiB"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(Busy)
    async def busy(_: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "10"})

    @app.exception_handler(TooLarge)
    async def too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(SpectrodiffError)
    async def bad_input(_: Request, exc: SpectrodiffError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        lines = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(lines)}, status_code=422)
