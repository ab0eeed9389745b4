"""The `spectrodiff` command line."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click's exceptions

from . import __version__
from .audio import AUDIO_SUFFIXES, audio_info, load_audio, normalize_loudness, save_audio
from .convert import audio_to_image, file_to_image, image_to_audio, save_image
from .errors import SpectrodiffError
from .files import check_writable, resolve_output
from .image import image_params, open_image
from .params import SpectrogramParams

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    help="Riffusion-style music generation: Stable Diffusion on mel-spectrogram images.",
    no_args_is_help=True,
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
        warnings.showwarning = _one_line_warning
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print("error: interrupted", markup=False)
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("SPECTRODIFF_DEBUG"):
                raise
            message = str(exc) if isinstance(exc, SpectrodiffError) else f"unexpected {type(exc).__name__}: {exc}"
            err_console.print(f"error: {' '.join(message.split())}", markup=False)
            raise typer.Exit(1) from None

    return wrapper


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


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")]
    = False,
) -> None:
    pass


def _require_file(path: Path) -> None:
    if not path.exists():
        raise SpectrodiffError(f"no such file: {path}")


@app.command("audio-to-image")
@handle_errors
def audio_to_image_command(
    audio: Annotated[Path, typer.Argument(help="Audio file (wav, flac, ogg, mp3), any rate and channel count.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="PNG file, or a folder (default outputs/).")] = None,
    start: Annotated[float, typer.Option(help="Start, in seconds.", min=0)] = 0.0,
    duration: Annotated[float | None, typer.Option(help="Length in seconds (default: to the end).", min=0)] = None,
    stereo: Annotated[bool, typer.Option("--stereo", help="Keep two channels (G = left, B = right).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Audio -> Riffusion spectrogram image (512 mel bins, 10 ms a column, parameters in EXIF).

    Example: spectrodiff audio-to-image song.mp3 --start 30 --duration 5.11 -o tile.png
    """
    _require_file(audio)
    params = SpectrogramParams(stereo=stereo)
    info = audio_info(audio)
    if start > 0 and start >= info.duration:
        raise SpectrodiffError(f"--start {start:g} s is beyond the end of {audio} ({info.duration:.2f} s)")
    path = resolve_output(out, f"{audio.stem}.png", IMAGE_SUFFIXES)
    check_writable(path, overwrite)
    span = (info.duration - start) if duration is None else min(duration, info.duration - start)
    with progress("spectrogram", params.width_for_samples(int(span * params.sample_rate))) as update:
        image = file_to_image(audio, params, start, duration, on_frames=update)
    save_image(path, image, overwrite)
    print(path)


@app.command("image-to-audio")
@handle_errors
def image_to_audio_command(
    image: Annotated[Path, typer.Argument(help="Spectrogram PNG (ours or Riffusion's).")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Audio file (.wav/.flac/.ogg/.mp3) or folder.")]
    = None,
    iters: Annotated[int, typer.Option(help="Griffin-Lim iterations.", min=0, max=1000)] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the initial phase (same seed, same audio).")] = 0,
    normalize: Annotated[bool, typer.Option(help="Gain to -12 dBFS as Riffusion does (peak kept below 0 dBFS).")]
    = True,
    overwrite: Overwrite = False,
) -> None:
    """Spectrogram image -> audio (least-squares mel inversion + fast Griffin-Lim).

    Example: spectrodiff image-to-audio tile.png -o tile.wav --iters 64
    """
    picture = open_image(image)
    path = resolve_output(out, f"{image.stem}.wav", OUTPUT_AUDIO_SUFFIXES)
    check_writable(path, overwrite)
    with progress("griffin-lim", iters) as update:
        audio, params = image_to_audio(picture, n_iter=iters, seed=seed, on_iter=update)
    save_audio(path, normalize_loudness(audio) if normalize else audio, params.sample_rate, overwrite)
    print(path)


def _audio_files(source: Path) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise SpectrodiffError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {source}")
        return files
    _require_file(source)
    return [source]


@app.command("slice")
@handle_errors
def slice_command(
    source: Annotated[Path, typer.Argument(help="An audio file, or a folder searched recursively.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the tiles.")],
    seconds: Annotated[float, typer.Option(help="Tile length; 5.12 s is a 512-column tile.", min=0.02, max=600)]
    = 5.12,
    hop: Annotated[float | None, typer.Option(help="Seconds between tile starts (default: --seconds).", min=0.01)]
    = None,
    format: Annotated[str, typer.Option(help="png (spectrogram tiles) or wav/flac (audio clips).")] = "png",
    stereo: Annotated[bool, typer.Option("--stereo", help="Stereo tiles or clips.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Cut audio into fixed-length tiles: spectrogram PNGs or audio clips. A partial last tile is dropped.

    Example: spectrodiff slice my_tracks/ -o tiles/ --seconds 5.12 --hop 2.56
    """
    fmt = format.lower().lstrip(".")
    if fmt not in ("png", "wav", "flac"):
        raise SpectrodiffError(f"--format must be png, wav or flac, not {format!r}")
    if out.exists() and not out.is_dir():
        raise SpectrodiffError(f"{out} exists and is not a folder")
    params = SpectrogramParams(stereo=stereo)
    width = params.tile_width(seconds)
    samples = params.samples_for_width(width)
    tile_seconds = samples / params.sample_rate
    hop = hop or tile_seconds
    channels = "stereo" if stereo else "mono"
    plan, failed = [], []
    root = source if source.is_dir() else source.parent
    for path in _audio_files(source):
        try:
            duration = audio_info(path).duration
        except SpectrodiffError as exc:
            failed.append(str(exc))
            continue
        count = int((duration - tile_seconds) // hop) + 1 if duration >= tile_seconds else 0
        # Tiles mirror the source's subfolders, so files with the same name in two folders both keep their tiles.
        folder = out / path.parent.relative_to(root)
        plan += [(path, k * hop, folder / f"{path.stem}_{round(k * hop * 1000):08d}ms.{fmt}") for k in range(count)]
    for message in failed:
        err_console.print(f"warning: skipped {message}", markup=False)
    if not plan:
        raise SpectrodiffError(f"nothing to slice: no file is at least one tile ({tile_seconds:.2f} s) long")
    for _, _, target in plan:
        check_writable(target, overwrite)
    with progress("slicing", len(plan)) as update:
        for done, (path, start, target) in enumerate(plan, 1):
            clip = load_audio(path, params.sample_rate, channels, start, tile_seconds)
            clip = clip[:, :samples] if clip.shape[1] >= samples else _pad(clip, samples)
            if fmt == "png":
                save_image(target, audio_to_image(clip, params), overwrite)
            else:
                save_audio(target, clip, params.sample_rate, overwrite)
            update(done)
    summary = f"{len(plan)} tiles ({width} columns, {tile_seconds:.3f} s) in {out}"
    print(summary + (f"; {len(failed)} file(s) skipped" if failed else ""))


def _pad(clip: np.ndarray, samples: int) -> np.ndarray:
    return np.pad(clip, ((0, 0), (0, samples - clip.shape[1])))


@app.command("info")
@handle_errors
def info_command(file: Annotated[Path, typer.Argument(help="An audio file or a spectrogram PNG.")]) -> None:
    """Describe an audio file (rate, channels, duration) or a spectrogram image (parameters, EXIF, duration).

    Example: spectrodiff info tile.png
    """
    _require_file(file)
    rows: dict[str, object]
    if file.suffix.lower() in IMAGE_SUFFIXES + (".jpg", ".jpeg", ".webp"):
        picture = open_image(file)
        params, max_value = image_params(picture)
        rows = {"file": file, "kind": "spectrogram image", "size": f"{picture.width} x {picture.height}",
                "mode": picture.mode, "channels": "stereo" if params.stereo else "mono",
                "duration": f"{params.samples_for_width(picture.width) / params.sample_rate:.3f} s",
                "max value": f"{max_value:g}"}
        rows.update({name.replace("_", " "): value for name, value in params.config.items()
                     if not name.startswith("_")})
    else:
        info = audio_info(file)
        rows = {"file": file, "kind": "audio", "format": f"{info.format} ({info.subtype})",
                "sample rate": f"{info.sample_rate} Hz", "channels": info.channels, "frames": info.frames,
                "duration": f"{info.duration:.3f} s"}
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")


def main() -> int:
    """Console entry point: usage errors (bad option values, missing arguments) become one line, exit status 2."""
    try:
        return app(standalone_mode=False) or 0
    except NoArgsIsHelpError as exc:
        print(exc.ctx.get_help())
        return 0
    except UsageError as exc:
        err_console.print(f"error: {exc.format_message()}", markup=False)
        return 2
    except typer.Abort:
        err_console.print("error: interrupted", markup=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
