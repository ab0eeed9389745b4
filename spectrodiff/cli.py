"""The `spectrodiff` command line."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import __version__, process
from .codec.params import TileSettings
from .errors import SpectrodiffError
from .generation.jobs import (
    DEFAULT_GUIDANCE,
    ComposeJob,
    ExtendJob,
    GenerateJob,
    InpaintJob,
    Job,
    MorphJob,
    RemixJob,
)
from .settings import check_value, cli_parameters, option_help, optional_kind, spec_of
from .training.options import DecoderOptions, PrepareOptions, TrainOptions, VocoderOptions

# Commands import what they use when they run: `--help` must not pay for torch (1-2 s) or diffusers (3 s more),
# and the codec commands never import diffusers, transformers or peft (tests/test_cli.py checks).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
# typer raises click's exceptions from its own copy of click (typer >= 0.26) and exports only BadParameter of them:
# a usage error (exit status 2) is an instance of BadParameter's base, click's UsageError (tests/test_bad_input.py).
UsageError = typer.BadParameter.__base__

app = typer.Typer(
    help="Riffusion-style music generation: Stable Diffusion on mel-spectrogram images.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

IMAGE_SUFFIXES = (".png",)
OUTPUT_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err_console.print(f"warning: {message}", markup=False)


def handle_errors(command: Callable) -> Callable:
    """Turn errors into one line on stderr and exit status 1 (set SPECTRODIFF_DEBUG=1 for the traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            # Every warning, every time (Python shows a warning once per place by default), as one line.
            warnings.simplefilter("always")
            # diffusers' schedulers trip a numpy 2 deprecation inside their own code: nothing a user can act on.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="diffusers")
            warnings.showwarning = _one_line_warning
            return _run(command, args, kwargs)

    return wrapper


def register_command(group: typer.Typer, name: str, function: Callable, params: list[inspect.Parameter]) -> None:
    """Register `function(**values)` as `group`'s command NAME taking `params` (typer reads a function's signature;
    these commands make theirs from settings models), its errors turned into one line (`handle_errors`)."""
    function.__signature__ = inspect.Signature(params)
    function.__annotations__ = {p.name: p.annotation for p in params}
    group.command(name)(handle_errors(function))


class Terminated(BaseException):
    """SIGTERM, raised where the program is (as Ctrl-C raises KeyboardInterrupt), so that the same clean-up runs:
    temporary files removed, nothing half-written left behind. Not a KeyboardInterrupt: libraries that take Ctrl-C
    as a request to stop quietly (uvicorn) would swallow it."""


def _terminate(signum, frame) -> None:
    raise Terminated


def _interrupted(exc: BaseException) -> int:
    """Say why the command stopped; the exit status of a process ended by that signal (128 + its number)."""
    terminated = isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated)
    err_console.print(f"error: {'terminated' if terminated else 'interrupted'}", markup=False)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


def _run(command: Callable, args: tuple, kwargs: dict):
    """Call a command, turning errors into one line on stderr and an exit status."""
    try:
        return command(*args, **kwargs)
    except (typer.Exit, UsageError):
        raise
    except (KeyboardInterrupt, Terminated) as exc:
        raise typer.Exit(_interrupted(exc)) from None
    except Exception as exc:
        if os.environ.get("SPECTRODIFF_DEBUG"):
            raise
        message = str(exc) if isinstance(exc, SpectrodiffError) else _unexpected(exc)
        err_console.print(f"error: {' '.join(message.split())}", markup=False)
        raise typer.Exit(1) from None


def _unexpected(exc: Exception) -> str:
    """An error no check foresaw, in words (no exception class names)."""
    from .files import os_reason

    if isinstance(exc, OSError):
        return os_reason(exc)
    return f"internal error ({exc or 'no message'}); SPECTRODIFF_DEBUG=1 shows where"


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields `update(completed)`."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda completed: bar.update(task, completed=completed)


def _version(value: bool) -> None:
    if value:
        print(f"spectrodiff {__version__}")
        raise typer.Exit()


def _help_when_bare(ctx: typer.Context) -> None:
    """A command group given no command prints its help (exit status 0)."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")]
    = False,
) -> None:
    _help_when_bare(ctx)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise SpectrodiffError(f"no such file: {path}")


ColumnsPerBeatOption = Annotated[int | None, typer.Option(
    "--columns-per-beat", help="Beat time: this many columns a beat, at --bpm (the hop is 60 / (bpm x columns) s; "
    "docs/format.md). Default: clock time, 10 ms a column.")]
BpmOption = Annotated[float | None, typer.Option("--bpm", help="The audio's tempo, for --columns-per-beat.")]


def _spectrogram_option(flag: str, value: object, name: str) -> object:
    """An option's value checked as the spectrogram parameter `name` is declared, its errors naming `flag`."""
    from .codec.params import SpectrogramSettings

    field = SpectrogramSettings.model_fields[name]
    return check_value(flag, value, optional_kind(field.annotation), spec_of(field))


def _beat_params(params, columns_per_beat: int | None, bpm: float | None):
    """`params` in beat time at `bpm` when both are given, as they are when neither is; one alone is an error."""
    from .codec.params import SpectrogramParams

    if (columns_per_beat is None) != (bpm is None):
        raise SpectrodiffError("--columns-per-beat and --bpm go together: a beat-time image needs both (neither: "
                               "clock time)")
    if columns_per_beat is None:
        return params
    return SpectrogramParams.from_dict(params.to_dict() | {
        "columns_per_beat": _spectrogram_option("--columns-per-beat", columns_per_beat, "columns_per_beat"),
        "tempo": _spectrogram_option("--bpm", bpm, "tempo")})


@app.command("audio-to-image")
@handle_errors
def audio_to_image_command(
    audio: Annotated[Path, typer.Argument(help="Audio file (wav, flac, ogg, mp3), any rate and channel count.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="PNG file, or a folder (default outputs/).")] = None,
    start: Annotated[float, typer.Option(help="Start, in seconds.", min=0)] = 0.0,
    duration: Annotated[float | None, typer.Option(help="Length in seconds (default: to the end).", min=0)] = None,
    stereo: Annotated[bool, typer.Option("--stereo", help="Keep two channels (G = left, B = right).")] = False,
    columns_per_beat: ColumnsPerBeatOption = None,
    bpm: BpmOption = None,
    overwrite: Overwrite = False,
) -> None:
    """Audio -> Riffusion spectrogram image (512 mel bins, 10 ms a column, parameters in EXIF), at most 600 s
    (60001 columns) an image; with --columns-per-beat and --bpm, a beat-time image (a beat is that many columns).

    Example: spectrodiff audio-to-image song.mp3 --start 30 --duration 5.11 -o tile.png
    """
    from .codec.audio import audio_info, check_readable
    from .codec.convert import file_to_image, save_image
    from .codec.image import MAX_IMAGE_COLUMNS
    from .codec.params import SpectrogramParams
    from .files import check_writable, resolve_output

    _require_file(audio)
    params = _beat_params(SpectrogramParams(stereo=stereo), columns_per_beat, bpm)
    info = check_readable(audio_info(audio))
    if start > 0 and start >= info.duration:
        raise SpectrodiffError(f"--start {start:g} s is beyond the end of {audio} ({info.duration:.2f} s)")
    path = resolve_output(out, f"{audio.stem}.png", IMAGE_SUFFIXES)
    check_writable(path, overwrite)
    span = (info.duration - start) if duration is None else min(duration, info.duration - start)
    width = params.width_for_samples(int(span * params.sample_rate))
    if width > MAX_IMAGE_COLUMNS:
        raise SpectrodiffError(f"{span:.1f} s of audio is {width} columns; an image holds at most {MAX_IMAGE_COLUMNS} "
                               "(600 s at 10 ms): choose a span with --start and --duration, or cut tiles with slice")
    with progress("spectrogram", width) as update:
        image = file_to_image(audio, params, start, duration, on_frames=update)
    save_image(path, image, overwrite)
    print(path)


@app.command("image-to-audio")
@handle_errors
def image_to_audio_command(
    image: Annotated[Path, typer.Argument(help="Spectrogram PNG (ours or Riffusion's), at most 60001 columns (600 s "
                                            "at 10 ms) and 2048 rows.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Audio file (.wav/.flac/.ogg/.mp3) or folder.")]
    = None,
    iters: Annotated[int, typer.Option(help=option_help(Job, "iters"))] = Job.model_fields["iters"].default,
    seed: Annotated[int, typer.Option(help="Seed of Griffin-Lim's initial phase (same seed, same audio).")] = 0,
    vocoder: Annotated[str | None, typer.Option("--vocoder", help="griffin-lim, neural, a bundled vocoder (riffusion, "
                                                "mini) or a vocoder folder. Default: the bundled vocoder for the "
                                                "image's parameters (Riffusion's has one), else griffin-lim.")]
    = None,
    normalize: Annotated[bool, typer.Option(help="Gain to -12 dBFS as Riffusion does (peak kept below 0 dBFS).")]
    = True,
    bpm: Annotated[float | None, typer.Option("--bpm", help="Play a beat-time image at this tempo: the same columns, "
                                              "another length. Default: the tempo it was made at (its EXIF).")]
    = None,
    overwrite: Overwrite = False,
) -> None:
    """Spectrogram image -> audio: a neural vocoder where one fits the image's parameters, else least-squares mel
    inversion and fast Griffin-Lim. A beat-time image plays at its own tempo, or at --bpm.

    Example: spectrodiff image-to-audio tile.png -o tile.wav
    """
    from .codec.audio import normalize_loudness, save_audio
    from .codec.image import image_params, open_image
    from .files import check_writable, resolve_output
    from .vocoding.registry import choose_vocoder, vocoder_name
    from .vocoding.render import image_to_audio

    try:
        check_value("--iters", iters, int, spec_of(Job.model_fields["iters"]))
    except SpectrodiffError as exc:
        raise UsageError(str(exc)) from None
    picture = open_image(image)
    path = resolve_output(out, f"{image.stem}.wav", OUTPUT_AUDIO_SUFFIXES)
    check_writable(path, overwrite)
    params, max_value = image_params(picture)
    params = _playing_tempo(params, bpm, image)
    chosen = choose_vocoder(vocoder, params.clock())
    with progress("audio", iters) as update:
        audio, params = image_to_audio(picture, params, max_value, n_iter=iters, seed=seed, on_iter=update,
                                       vocoder=chosen or "griffin-lim")
    save_audio(path, normalize_loudness(audio) if normalize else audio, params.sample_rate, overwrite)
    print(path)
    err_console.print(f"{audio.shape[-1] / params.sample_rate:.2f} s of audio, rendered by {vocoder_name(chosen)}",
                      markup=False)


def _playing_tempo(params, bpm: float | None, image: Path):
    """The parameters an image is heard at: a beat-time image's own tempo, or `bpm`; an error for a beat-time image
    with neither, or for `bpm` given to a clock-time image."""
    if bpm is not None:
        if not params.beat_time:
            raise SpectrodiffError(f"--bpm re-times beat-time images; {image} is in clock time "
                                   f"({params.config.step_size_ms} ms a column)")
        return params.at_tempo(_spectrogram_option("--bpm", bpm, "tempo"))
    if params.beat_time and params.tempo is None:
        raise SpectrodiffError(f"{image} is in beat time ({params.columns_per_beat} columns a beat) and records no "
                               "tempo: give one with --bpm")
    return params


@app.command("slice")
@handle_errors
def slice_command(
    source: Annotated[Path, typer.Argument(help="An audio file, or a folder searched recursively.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the tiles.")],
    seconds: Annotated[float, typer.Option(help=option_help(TileSettings, "seconds"))] = 5.12,
    hop: Annotated[float | None, typer.Option(help=option_help(TileSettings, "hop"))] = None,
    format: Annotated[str, typer.Option(help="png (spectrogram tiles) or wav/flac (audio clips).")] = "png",
    stereo: Annotated[bool, typer.Option("--stereo", help="Stereo tiles or clips.")] = False,
    columns_per_beat: ColumnsPerBeatOption = None,
    bpm: BpmOption = None,
    overwrite: Overwrite = False,
) -> None:
    """Cut audio into fixed-length tiles: spectrogram PNGs or audio clips, named <file>_<extension>_<start>ms
    (as `prepare` names its tiles). A partial last tile is dropped. With --columns-per-beat and --bpm each PNG is
    in beat time (the same span of audio, a beat that many columns).

    Example: spectrodiff slice my_tracks/ -o tiles/ --seconds 5.12 --hop 2.56
    """
    from .codec.audio import audio_info, find_audio, save_audio
    from .codec.convert import audio_to_image, save_image
    from .codec.tiles import Tiling, tile_name
    from .files import check_writable

    fmt = format.lower().lstrip(".")
    if fmt not in ("png", "wav", "flac"):
        raise SpectrodiffError(f"--format must be png, wav or flac, not {format!r}")
    if out.exists() and not out.is_dir():
        raise SpectrodiffError(f"{out} exists and is not a folder")
    tiling = Tiling(seconds, hop, stereo)
    params = _beat_params(tiling.params, columns_per_beat, bpm)
    if params.beat_time and fmt != "png":
        raise SpectrodiffError(f"--columns-per-beat and --bpm make beat-time images: use --format png, not {fmt}")
    plan, failed = [], []
    root = source if source.is_dir() else source.parent
    for path in find_audio(source):
        try:
            duration = audio_info(path).duration
        except SpectrodiffError as exc:
            failed.append(str(exc))
            continue
        # Tiles mirror the source's subfolders, so files with the same name in two folders both keep their tiles.
        plan += [(path, start, out / tile_name(path.relative_to(root), start, fmt))
                 for start in tiling.starts(duration)]
    for message in failed:
        err_console.print(f"warning: skipped {message}", markup=False)
    if not plan:
        raise SpectrodiffError(f"nothing to slice: no file is at least one tile ({tiling.tile_seconds:.2f} s) long")
    for _, _, target in plan:
        check_writable(target, overwrite)
    with progress("slicing", len(plan)) as update:
        for done, (path, start, target) in enumerate(plan, 1):
            clip = tiling.read(path, start)
            if fmt == "png":
                save_image(target, audio_to_image(clip, params), overwrite)
            else:
                save_audio(target, clip, tiling.params.sample_rate, overwrite)
            update(done)
    width = params.width_for_samples(tiling.samples)
    summary = f"{len(plan)} tiles ({width} columns, {tiling.tile_seconds:.3f} s) in {out}"
    print(summary + (f"; {len(failed)} file(s) skipped" if failed else ""))


def _tempo_rows(path: Path, sample_rate: int) -> dict[str, object]:
    """What a WAV's acid and smpl chunks say, as `info` shows it."""
    from .codec.riff import read_loop_info
    from .generation.musical import MIDDLE_C, NOTE_NAMES
    from .settings import number_words

    found = read_loop_info(path)
    if found is None:
        return {"tempo": "none recorded (no acid chunk)"}
    loop, points = found
    rows: dict[str, object] = {"tempo": f"{number_words(loop.bpm)} BPM", "meter": loop.meter, "beats": loop.beats,
                               "key": "not recorded" if loop.root_note is None else
                               f"root {NOTE_NAMES[(loop.root_note - MIDDLE_C) % 12]} (MIDI {loop.root_note})"}
    rows["loop"] = ", ".join(f"samples {first}-{last} ({first / sample_rate:.3f}-{(last + 1) / sample_rate:.3f} s)"
                             for first, last in points) or "none (not a loop)"
    return rows


@app.command("info")
@handle_errors
def info_command(file: Annotated[Path, typer.Argument(help="An audio file or a spectrogram PNG.")]) -> None:
    """Describe an audio file (rate, channels, duration; a WAV's tempo, meter, beats, key and loop points) or a
    spectrogram image (parameters, EXIF, duration).

    Example: spectrodiff info tile.png
    """
    _require_file(file)
    rows: dict[str, object]
    if file.suffix.lower() in IMAGE_SUFFIXES + (".jpg", ".jpeg", ".webp"):
        from .codec.image import image_params, open_image

        picture = open_image(file)
        params, max_value = image_params(picture)
        untimed = params.beat_time and params.tempo is None  # beats, but no tempo to make them seconds
        rows = {"file": file, "kind": "spectrogram image", "size": f"{picture.width} x {picture.height}",
                "mode": picture.mode, "channels": "stereo" if params.stereo else "mono",
                "duration": f"{(picture.width - 1) / params.columns_per_beat:g} beats (no tempo)" if untimed else
                f"{params.samples_for_width(picture.width) / params.sample_rate:.3f} s",
                "max value": f"{max_value:g}"}
        rows.update({name.replace("_", " "): value for name, value in params.to_dict().items()})
    else:
        from .codec.audio import audio_info, is_truncated

        info = audio_info(file)
        rows = {"file": file, "kind": "audio", "format": f"{info.format} ({info.subtype})",
                "sample rate": f"{info.sample_rate} Hz", "channels": info.channels, "frames": info.frames,
                "duration": f"{info.duration:.3f} s"}
        if is_truncated(file):
            rows["truncated"] = "yes: the file ends before its header says it does (cut short or damaged)"
        if file.suffix.lower() == ".wav":
            rows |= _tempo_rows(file, info.sample_rate)
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


# ---- generation ----------------------------------------------------------------------------------------------
# Each generating command's options are its job's fields (spectrodiff/generation/jobs.py: one declaration per mode,
# shared with batch lines, the web API and the studio), plus how the model loads and where results go.

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Bundled model name, model folder, or hub id.")]
OutOption = Annotated[Path | None, typer.Option("-o", "--out", help="A .wav/.flac file (PNG and JSON go beside it) "
                                                "or a folder (default outputs/<date>-<slug>-<seed>/).")]
PickleOption = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickled (.bin/.ckpt) weights: they can "
                                            "run code, load them only from sources you trust.")]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps ...")]
DtypeOption = Annotated[str, typer.Option("--dtype", help="float32, or float16/bfloat16 on CUDA.")]
VocoderOption = Annotated[str | None, typer.Option("--vocoder", help="griffin-lim, neural, a bundled vocoder "
                                                   "(riffusion, mini) or a vocoder folder. Default: the model's own "
                                                   "vocoder, else the bundled one for its parameters, else "
                                                   "griffin-lim.")]
DEFAULT_MODEL = "mini"
DTYPES = ("float32", "float16", "bfloat16")


@dataclasses.dataclass
class Runtime:
    """How the model loads and where results go: the options every generating command takes beside its job."""

    model: str = DEFAULT_MODEL
    out: Path | None = None
    allow_pickle: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    attention_slicing: bool = False
    cpu_offload: bool = False
    lora: Path | None = None
    overwrite: bool = False

    def load(self):
        return _load(self.model, self.allow_pickle, self.device, self.dtype, self.attention_slicing,
                     self.cpu_offload, self.lora)


RUNTIME_OPTIONS = {
    "model": ModelOption, "out": OutOption, "allow_pickle": PickleOption, "device": DeviceOption,
    "dtype": DtypeOption,
    "attention_slicing": Annotated[bool, typer.Option("--attention-slicing", help="Lower peak memory, a little "
                                                      "slower.")],
    "cpu_offload": Annotated[bool, typer.Option("--cpu-offload", help="Keep idle sub-models on the CPU (CUDA).")],
    "lora": Annotated[Path | None, typer.Option("--lora", help="LoRA file (or folder) from `spectrodiff train "
                                                "--lora-rank`, applied to the model's UNet.")],
    "overwrite": Overwrite,
}


@contextlib.contextmanager
def _stages() -> Iterator[Callable[[str, int, int], None]]:
    """One rich progress bar per stage (denoising, decoding): yields `report(stage, done, total)`."""
    columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def _load(model: str, allow_pickle: bool = False, device: str = "cpu", dtype: str = "float32",
          slicing: bool = False, offload: bool = False, lora: Path | None = None):
    import torch

    from .generation.pipeline import SpectrodiffPipeline

    if dtype not in DTYPES:
        raise SpectrodiffError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    _quiet_loading()
    pipe = SpectrodiffPipeline.load(model, allow_pickle=allow_pickle, device=device, dtype=getattr(torch, dtype),
                                    attention_slicing=slicing, cpu_offload=offload, lora=lora)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generation_command(name: str, job, example: str, face: Callable | None = None, face_params: tuple = (),
                       run_params: tuple = (), runs: Callable | None = None) -> None:
    """Register `spectrodiff NAME` for a job class: its options (`cli_parameters`), the command line's own face of
    fields it takes another way (`face_params`, turned into job fields by `face(**values)`), options about the run
    rather than the job (`run_params`, passed to `runs(job, runtime, **values)`, which lists the (job, runtime)
    pairs to make; default the one), and the runtime options. Every run's files are checked before the model
    loads."""
    face_names, run_names = [p.name for p in face_params], [p.name for p in run_params]

    def command(**kwargs):
        runtime = Runtime(**{k: kwargs.pop(k) for k in RUNTIME_OPTIONS})
        run_values = {k: kwargs.pop(k) for k in run_names}
        fields = {k: v for k, v in kwargs.items() if k not in face_names}
        try:
            if face is not None:
                fields |= face(**{k: kwargs[k] for k in face_names})
            job_value = job.from_dict(fields, flag=True)
        except SpectrodiffError as exc:
            raise UsageError(str(exc)) from None
        planned = runs(job_value, runtime, **run_values) if runs else [(job_value, runtime)]
        for one, where in planned:
            check_files(one, where.out, where.overwrite)
        pipe = runtime.load()
        with _stages() as report:
            for one, where in planned:
                _run_one(pipe, one, where, report)

    runtime_params = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=getattr(Runtime, k), annotation=a)
                      for k, a in RUNTIME_OPTIONS.items()]
    command.__doc__ = f"{job.__doc__}\n\nExample: spectrodiff {name} {example}"
    command.__name__ = f"{name.replace('-', '_')}_command"
    register_command(app, name, command, [*face_params, *cli_parameters(job), *run_params, *runtime_params])


def check_files(job, out: Path | None, overwrite: bool) -> None:
    """What a job reads and writes, checked before the model loads (seconds of imports and loading), with the
    words the mode itself would use: its input audio is a readable audio file, its outputs are not in the way."""
    from .generation.paths import output_paths

    check_inputs(job)
    output_paths(out, job, overwrite)


def check_inputs(job) -> None:
    """SpectrodiffError unless the job's input audio (if it has one) is a readable audio file."""
    from .codec.audio import audio_info, check_readable

    if getattr(job, "audio", None) is not None:
        check_readable(audio_info(job.audio))


def _run_one(pipe, job, runtime: Runtime, report) -> None:
    from .generation.modes import make
    from .generation.output import Output

    _print_result(make(pipe, job, Output(runtime.out, report, runtime.overwrite)))


MUSIC_SOURCES = {"asked": "as asked", "words": "from the prompt", "model": "picked by the model"}


def _print_result(result) -> None:
    print(result.audio)
    music = result.record.get("music") or {}
    played = ", ".join(f"{value} {MUSIC_SOURCES[source]}" for value, source in (
        (f"{music.get('bpm') or 0:g} BPM", music.get("source")), (music.get("key"), music.get("key_source")))
        if source in MUSIC_SOURCES)
    played = f" ({played})" if played else ""
    err_console.print(f"{result.seconds:.2f} s of audio{played}; spectrogram {result.image}, "
                      f"settings {result.sidecar}", markup=False)


def _comma_list(text: str | None, kind: type, name: str, count: int) -> list:
    if text is None:
        return []
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--{name} must be comma-separated numbers, got {text!r}"[:200]) from None
    if len(values) not in (1, count):
        raise UsageError(f"--{name} needs 1 or {count} values (one per prompt), got {len(values)}")
    return values * count if len(values) == 1 else values


def _morph_face(prompts: list[str], seeds: str | None, guidance: str | None, negative: str) -> dict:
    """The morph command's prompts, --seeds and --guidance lists and --negative -> the job's keyframes."""
    if len(prompts) < 2:
        raise UsageError("morph needs at least two prompts")
    seed_list = _comma_list(seeds, int, "seeds", len(prompts)) or list(range(len(prompts)))
    guidance_list = _comma_list(guidance, float, "guidance", len(prompts)) or [DEFAULT_GUIDANCE] * len(prompts)
    return {"keyframes": [{"prompt": p, "seed": s, "guidance": g, "negative": negative}
                          for p, s, g in zip(prompts, seed_list, guidance_list, strict=True)]}


def _compose_face(plan: Path) -> dict:
    """The compose command's plan file -> the job's keyframes and transition."""
    from .generation.plans import load_plan

    return load_plan(plan)


def _generate_many(job, runtime: Runtime, count: int) -> list[tuple[GenerateJob, Runtime]]:
    """`generate --count N`: N clips, seeds seed, seed + 1, ... (into numbered folders of -o)."""
    if count > 1 and runtime.out is not None and runtime.out.suffix:
        raise SpectrodiffError("--count above 1 needs -o to name a folder, not a file")
    return [(job.replace(seed=job.seed + n),
             dataclasses.replace(runtime, out=runtime.out / f"{n:03d}" if count > 1 and runtime.out is not None
                                 else runtime.out))
            for n in range(count)]


def _argument(name: str, annotation) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)


def _option(name: str, annotation, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


generation_command("generate", GenerateJob, '"jazzy saxophone" --seed 3 --seconds 10', runs=_generate_many,
                   run_params=(_option("count", Annotated[int, typer.Option(
                       help="Clips to make, seeds --seed, --seed + 1, ...", min=1, max=100)], 1),))
generation_command("morph", MorphJob, '"church bells" "electronic beats" --seconds 30 --seeds 42,7', _morph_face, (
    _argument("prompts", Annotated[list[str], typer.Argument(help="Two or more prompts, in order.")]),
    _option("seeds", Annotated[str | None, typer.Option(help="Seeds, comma-separated, one per prompt (default "
                                                         "0,1,2...).")], None),
    _option("guidance", Annotated[str | None, typer.Option(help="Guidance per prompt, comma-separated (default "
                                                            f"{DEFAULT_GUIDANCE:g}).")], None),
    _option("negative", Annotated[str, typer.Option(help="What not to hear.")], "")))
generation_command("compose", ComposeJob, "prompts/jazz-to-techno.yaml -o jazz-to-techno.wav", _compose_face, (
    _argument("plan", Annotated[Path, typer.Argument(help="YAML plan of keyframes (see prompts/).")]),))
generation_command("remix", RemixJob, 'song.wav --prompt "church organ" --strength 0.5')
generation_command("extend", ExtendJob, 'riff.wav --prompt "blues guitar" --seconds 10')
generation_command("inpaint", InpaintJob, 'take.wav --prompt "drum fill" --start 4.0 --end 6.0')


def _batch(jobs: Path, runtime: Runtime, shared: dict) -> None:
    """Run the lines of a batch file; under `accelerate launch` each process takes its share on its own device."""
    from .generation.batch import plan_lines, run_line
    from .generation.plans import load_jobs

    entries = load_jobs(jobs)
    try:  # every line and its files checked before the model loads and the first job runs
        targets = [target for _, target in plan_lines(entries, shared, runtime.out, runtime.overwrite, check_inputs)]
    except SpectrodiffError as exc:
        raise SpectrodiffError(f"{jobs} {exc}") from None
    from accelerate import PartialState  # torch: after the checks
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # `accelerate launch --cpu`
    if state.num_processes > 1:
        runtime = dataclasses.replace(runtime, device=str(state.device))
    pipe = runtime.load()
    with state.split_between_processes(list(zip(entries, targets, strict=True))) as mine, _stages() as report:
        for (line, job), target in mine:
            try:
                result = run_line(pipe, job, shared, runtime.out, report, runtime.overwrite, target)
            except SpectrodiffError as exc:
                raise SpectrodiffError(f"{jobs} line {line}: {exc}") from None
            if result is None:
                err_console.print(f"{jobs} line {line}: done before (its files hold the same job); skipped",
                                  markup=False)
            else:
                _print_result(result)


def batch_command(jobs: Path, **options) -> None:
    """Many jobs, one model load. Each line is a job: the "job" object of any JSON sidecar redoes that result (a
    line may add "out", and "overwrite": true). The shared settings given here (--steps, --iters, ...) and -o are
    defaults for the lines that leave them out; lines without "out" go to the -o folder (default outputs/) named by
    prompt and job. A line whose files already hold the same job is skipped, so a fixed batch can simply be rerun.
    Under `accelerate launch` the jobs are split across processes, each on its own device.

    Example: spectrodiff batch jobs.jsonl   |   accelerate launch -m spectrodiff.cli batch jobs.jsonl
    """
    runtime = Runtime(**{k: options.pop(k) for k in RUNTIME_OPTIONS})
    try:
        shared = Job.from_dict(options, flag=True).to_dict()
    except SpectrodiffError as exc:
        raise UsageError(str(exc)) from None
    _batch(jobs, runtime, {k: v for k, v in shared.items() if k in options and k != "mode"})


_batch_params = [inspect.Parameter("jobs", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
    Path, typer.Argument(help='JSON lines, one job each: {"mode": "generate", "prompt": ...}.')])]
_batch_params += cli_parameters(Job) + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY,
                                                          default=getattr(Runtime, k), annotation=a)
                                        for k, a in RUNTIME_OPTIONS.items()]
register_command(app, "batch", batch_command, _batch_params)


@app.command("serve")
@handle_errors
def serve_command(
    model: ModelOption = DEFAULT_MODEL,
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback exposes the studio.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 7860,
    vocoder: VocoderOption = None,
    seed_images: Annotated[Path | None, typer.Option("--seed-images", help="Folder of extra seed/mask spectrogram "
                                                     "PNGs for /run_inference/ (id = file name without .png).")]
    = None,
    allow_origin: Annotated[list[str] | None, typer.Option("--allow-origin", help="A web origin whose pages may "
                                                           "call the API (repeatable), e.g. Riffusion's app at "
                                                           "http://localhost:3000.")] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Print one line per request (client, method, "
                                             "path, status, seconds) on stderr.")] = False,
    allow_pickle: PickleOption = False,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
) -> None:
    """The studio in your browser (generate, morph, compose, remix/extend/inpaint, spectrogram tools) and a JSON
    API with Riffusion's POST /run_inference/, on one loaded model.

    Example: spectrodiff serve --port 7860   (then open http://127.0.0.1:7860/)
    """
    try:
        from .web import Studio, check_address, serve
    except ImportError as exc:
        raise SpectrodiffError(f"serve needs the web extra ({exc.name} is missing): pip install "
                               "'spectrodiff[serve]'") from None
    if seed_images is not None and not seed_images.is_dir():
        raise SpectrodiffError(f"--seed-images {seed_images}: not a folder")
    check_address(host, port)
    warnings.filterwarnings("ignore", category=ResourceWarning)  # event loops the web libraries leave to the GC
    studio = Studio(_load(model, allow_pickle, device, dtype), vocoder=vocoder, seed_images=seed_images)
    serve(studio, host, port, tuple(allow_origin or ()), access_log=access_log)


def options_command(name: str, options: type) -> Callable:
    """Register the decorated function as `spectrodiff NAME`, its options made from the settings model `options`
    (each defaults to None: not given, so that a config or the model's default stands). The function gets the
    given ones as an `options` instance; a bad value is the one-line error a config's would be (exit status 1)."""

    def register(body: Callable) -> Callable:
        def command(**values) -> None:
            body(options.from_dict({k: v for k, v in values.items() if v is not None}, flag=True))

        command.__doc__, command.__name__ = body.__doc__, body.__name__
        register_command(app, name, command, cli_parameters(options, unset_defaults=True))
        return body

    return register


def _log_line(line: str) -> None:
    err_console.print(line, markup=False)


@options_command("prepare", PrepareOptions)
def prepare_command(opts: PrepareOptions) -> None:
    """Audio catalogue -> training dataset: spectrogram tiles and captions (Hugging Face imagefolder), split by track.

    Example: spectrodiff prepare my_music/ -o dataset/ --base mini --workers 4
    """
    from .training.prepare import default_workers, fit_base, prepare_dataset

    opts, out = fit_base(opts), opts.out
    with _stages() as report:
        manifest = prepare_dataset(opts.catalogue, out, opts.seconds, opts.hop, opts.min_rms,
                                   opts.workers or default_workers(), opts.validation, opts.seed, opts.stereo,
                                   opts.n_mels, progress=lambda done, total: report("preparing", done, total),
                                   columns_per_beat=opts.columns_per_beat, beats=opts.beats, unsteady=opts.unsteady,
                                   strict_tempo=opts.strict_tempo)
    counts, run = manifest["counts"], manifest["run"]
    tiles, tracks = counts["tiles"], counts["tracks"]
    summary = (f"{tiles['train'] + tiles['validation']} tiles in {out}: train {tiles['train']} from "
               f"{tracks['train']} track(s), validation {tiles['validation']} from {tracks['validation']} track(s); "
               f"{counts['dropped_silent']} silent tiles dropped")
    if run["reused"]:
        summary += f"; {run['reused']} file(s) done earlier, {run['tiled']} tiled now"
    print(summary + (f"; {counts['skipped']} file(s) skipped" if counts["skipped"] else ""))


@options_command("train", TrainOptions)
def train_command(opts: TrainOptions) -> None:
    """Fine-tune a model's UNet (full or LoRA) on a prepared dataset, or train a model from a config.

    Example: spectrodiff train dataset/ -o my-model/ --base riffusion/riffusion-model-v1 --lora-rank 16
    """
    from .training.train import train

    summary = train(opts.replace(log=_log_line))
    print(summary["lora"] or summary["out"])


@options_command("train-vocoder", VocoderOptions)
def train_vocoder_command(opts: VocoderOptions) -> None:
    """Train a neural vocoder (mel -> waveform) for a set of spectrogram parameters on your audio.

    Example: spectrodiff train-vocoder my-music/ -o my-vocoder/ --config training/configs/vocoder-mini.yaml
    """
    from .training.vocoder import train_vocoder

    print(train_vocoder(opts.replace(log=_log_line))["out"])


def _quiet_loading() -> None:
    """No per-file progress bars and load reports from diffusers and transformers while a model loads: the CLI
    shows its own progress, and loading a small model takes a second."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


# ---- `spectrodiff dev`: the tools that build the project's own data and bundled models --------------------------
# Each is also `python -m <its module>`, whose __main__ block calls `main(["dev", <name>, ...])`.

dev_app = typer.Typer(help="Build the project's own data and bundled models (reference catalogue, recordings, test "
                      "signals, decoder fine-tune, bundling).", rich_markup_mode=None)
dev_app.callback(invoke_without_command=True)(_help_when_bare)
app.add_typer(dev_app, name="dev")


@dev_app.command("catalogue")
@handle_errors
def dev_catalogue_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the catalogue into.")],
    minutes: Annotated[float, typer.Option(help="Total audio, in minutes.")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of every musical choice.")] = 0,
    renderer: Annotated[str, typer.Option(help="fluidsynth (training: MuseScore General + avldrums; version 1: "
                                          "FluidR3) or timidity (freepats: held out).")] = "fluidsynth",
    clip_seconds: Annotated[float, typer.Option(help="Length of each clip.")] = 20,
    workers: Annotated[int | None, typer.Option(help="Clips rendered at once (default: CPU cores).")] = None,
    version: Annotated[int, typer.Option(help="2: every style, stems, the new sound banks; 1: what mini v1 "
                                         "trained on.")] = 2,
) -> None:
    """The reference catalogue: music written as MIDI in code, rendered with General MIDI synthesisers.

    Example: spectrodiff dev catalogue data/catalogue --minutes 120 --seed 0
    """
    from .training.catalogue import build_catalogue, describe

    print(describe(build_catalogue(out, minutes, seed, renderer, clip_seconds, workers, version), out))


def dev_decoder_command(model: str, datasets: list[Path], **values) -> None:
    """Fine-tune a model's VAE decoder alone, so that the UNet's latent space stays exactly as it was trained.

    Example: spectrodiff dev decoder runs/mini data/mini-dataset -o runs/mini-decoder --max-steps 1500
    """
    from .training.decoder import finetune_decoder

    given = {name: value for name, value in values.items() if value is not None}
    opts = DecoderOptions.from_dict({"model": model, "dataset": datasets[0], "extra": tuple(datasets[1:]), **given},
                                    flag=True)
    summary = finetune_decoder(opts)
    print(f"{summary['out']}: {summary['steps']} steps, validation SC {summary['val_sc'][-1]:.4f}")


# The decoder's options are DecoderOptions' settings, with its datasets as arguments after the model (the first
# trains and validates, the others add their training tiles).
_decoder_params = cli_parameters(DecoderOptions, skip=("dataset", "extra"), unset_defaults=True)
_decoder_params.insert(1, inspect.Parameter("datasets", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[
    list[Path], typer.Argument(help="Datasets made by `spectrodiff prepare` with the model's params; the first "
                               "validates, the others add their training tiles.", metavar="DATASET...")]))
register_command(dev_app, "decoder", dev_decoder_command, _decoder_params)


@dev_app.command("bundle")
@handle_errors
def dev_bundle_command(
    source: Annotated[Path, typer.Argument(help="A trained model folder (with --vocoder-only: a vocoder folder).")],
    target: Annotated[Path, typer.Argument(help="The bundled copy, e.g. spectrodiff/models/mini.")],
    vocoder: Annotated[Path | None, typer.Option(help="A trained vocoder folder to bundle as the model's "
                                                 "vocoder/.")] = None,
    vocoder_only: Annotated[bool, typer.Option("--vocoder-only", help="SOURCE is a vocoder folder, bundled "
                                               "alone.")] = False,
) -> None:
    """Copy a trained model (or vocoder) into the package as a bundled one: float16 safetensors.

    Example: spectrodiff dev bundle runs/mini-music spectrodiff/models/mini --vocoder runs/vocoder-mini
    """
    from .training.bundle import bundle, bundle_vocoder

    size = bundle_vocoder(source, target) if vocoder_only else bundle(source, target, vocoder)
    print(f"{target}: {size:.1f} MB")


@dev_app.command("recordings")
@handle_errors
def dev_recordings_command(
    out: Annotated[Path, typer.Argument(help="Folder for the train/ and heldout/ links.")],
) -> None:
    """Real recordings for the vocoders (Debian sample packs), split once into training and held-out sets.

    Example: spectrodiff dev recordings data/recordings
    """
    from .training.recordings import link_recordings

    counts = link_recordings(out)
    print(f"{out}: {counts['train']} training and {counts['heldout']} held-out recordings")


@dev_app.command("signal")
@handle_errors
def dev_signal_command(
    out: Annotated[Path, typer.Argument(help="Audio file to write (16-bit, 44.1 kHz).")],
    kind: Annotated[str, typer.Option(help="chord, drums, noise or mix.")] = "mix",
    seconds: Annotated[float, typer.Option(help="Length.")] = 5.12,
) -> None:
    """A short test signal synthesised in code (chords, drums, noise, or their mix).

    Example: spectrodiff dev signal mix.wav --kind mix --seconds 5.12
    """
    from .signals import write_signal

    write_signal(out, kind, seconds)


def main(argv: list[str] | None = None) -> int:
    """The command line (`argv`: the arguments, default sys.argv[1:]): usage errors (bad option values, missing
    arguments) become one line, exit status 2."""
    try:
        return app(args=argv, prog_name="spectrodiff", standalone_mode=False) or 0
    except UsageError as exc:
        err_console.print(f"error: {exc.format_message()}", markup=False)
        return 2
    except (typer.Abort, Terminated) as exc:  # an interruption outside a command (click makes Ctrl-C an Abort)
        return _interrupted(exc)


def console_entry() -> None:
    """The `spectrodiff` command: `main`, with SIGTERM ending a command as Ctrl-C does, then a quick exit
    (spectrodiff/process.py)."""
    process.keep_freed_memory()
    signal.signal(signal.SIGTERM, _terminate)
    process.exit_now(main())


if __name__ == "__main__":
    console_entry()
