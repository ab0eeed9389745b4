"""The web page (Gradio): Generate, Morph, Compose, Remix / Extend / Inpaint and Spectrogram tools. Every result
shows a player, the spectrogram, the settings that redo it, and downloads of the WAV, PNG and JSON."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from ..codec.audio import AUDIO_SUFFIXES, audio_info, load_audio
from ..errors import SpectrodiffError
from ..generation.jobs import JOBS, Keyframe
from ..generation.musical import NOTE_NAMES
from ..settings import REQUIRED, number_words, optional_kind, spec_of
from .service import IMAGE_SUFFIXES, SERVER_CONTROLLED, SERVER_HIGHS, StoredResult, Studio

WAVEFORM_SIZE = (900, 120)
# A handler's parameter defaulting to a gr.Progress gets a progress bar of its own for each call.
PROGRESS = gr.Progress()
# The Compose timeline's columns, keyframe settings by name (a table sent with its own headers is read by them),
# and the timeline it starts with: the rest of each row is the keyframe's default (blank where it has none).
COMPOSE_COLUMNS = ["prompt", "seed", "seconds", "bars", "bpm", "guidance"]
DEFAULT_TIMELINE = ({"prompt": "jazzy saxophone", "seconds": 8},
                    {"prompt": "electronic beats", "seed": 1, "seconds": 8})
# System fonts only: the default theme would fetch Google Fonts, and the studio must work offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def uploaded(path: str | None, what: str = "an audio file") -> Path:
    """A file input's path: a file uploaded through the page (Gradio has refused any other path before a handler
    runs, see build_studio), never a folder; the message names no server path."""
    if not path or not Path(path).is_file():
        raise SpectrodiffError(f"upload {what} first")
    return Path(path)


def uploads_only(component: gr.components.Component) -> gr.components.Component:
    """A file input that Gradio moves into its cache only when it is a regular file: given an http(s) "path" Gradio
    would download it (no bound on how many), and a folder inside its upload folder passes its upload check but is
    listed among its temporary files, on which its cache clean-up then fails for good. (Set on the instance: a
    subclass of a Gradio component makes Gradio write a .pyi file beside this module.)"""
    move, move_async = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    def refuse(path: str | Path | None) -> None:
        if path is not None and not Path(path).is_file():
            raise gr.Error("upload a file first")

    def checked(path: str | Path | None) -> str | None:
        refuse(path)
        return move(path)

    async def checked_async(path: str | Path | None) -> str | None:
        refuse(path)
        return await move_async(path)

    component.move_resource_to_block_cache, component.async_move_resource_to_block_cache = checked, checked_async
    return component


def waveform_picture(path: str | None, start: float, end: float) -> Image.Image | None:
    """The uploaded audio's envelope, with the span [start, end) seconds shaded: what inpaint will regenerate."""
    try:
        Studio.check_upload(uploaded(path))
    except SpectrodiffError:
        return None  # the job's own check says what is wrong when it runs
    audio = load_audio(Path(path), 22050, "mono")[0]
    width, height = WAVEFORM_SIZE
    picture = Image.new("RGB", WAVEFORM_SIZE, "white")
    draw = ImageDraw.Draw(picture)
    seconds = len(audio) / 22050
    if seconds > 0 and end > start:
        a, b = (int(width * min(max(t / seconds, 0), 1)) for t in (start, end))
        draw.rectangle((a, 0, b, height), fill=(255, 214, 153))
    columns = np.array_split(audio, width) if len(audio) >= width else [audio]
    for x, column in enumerate(columns):
        if column.size:
            low, high = float(column.min()), float(column.max())
            draw.line((x, height / 2 * (1 - high), x, height / 2 * (1 - low)), fill=(40, 70, 140))
    return picture


def pick_span(path: str | None, start: float, end: float, event: gr.SelectData) -> tuple[float, float]:
    """A click on the waveform moves the nearer end of the span there (seconds, to the millisecond)."""
    try:
        duration = audio_info(uploaded(path)).duration
    except SpectrodiffError:
        return start, end  # as waveform_picture: the job's own check speaks when it runs
    seconds = round(event.index[0] / WAVEFORM_SIZE[0] * duration, 3)
    if abs(seconds - start) <= abs(seconds - end):
        return min(seconds, end), end
    return start, max(seconds, start)


def _reporter(progress: gr.Progress) -> Callable[[str, int, int], None]:
    return lambda stage, done, total: progress(done / max(total, 1), desc=stage)


def _show(stored: StoredResult) -> tuple:
    """(player, spectrogram, settings, downloads) of a result."""
    return (str(stored.path("audio")), str(stored.path("image")), stored.record,
            [str(stored.path(kind)) for kind in ("audio", "image", "sidecar")])


def _guarded(function: Callable) -> Callable:
    """Bad input becomes a message on the page (gr.Error) instead of a traceback."""

    @functools.wraps(function)
    def with_page_errors(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SpectrodiffError as exc:
            raise gr.Error(str(exc)) from None

    return with_page_errors


def _whole(value: float | None) -> int | float | None:
    """A number box's value (a float) as an int where it is whole; anything else (a fraction, NaN) goes on as it is,
    so that the job's own check words the error as every face does ("steps must be a whole number, got nan")."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _result_panel(loop: bool = False) -> list[gr.components.Component]:
    """(player, spectrogram, settings, downloads); `loop`: the player repeats (a loop's own test)."""
    with gr.Column():
        # The browser's own player (a real <audio> element) rather than the waveform widget.
        audio = gr.Audio(label="Audio", type="filepath", interactive=False, elem_classes="result-audio", loop=loop,
                         waveform_options=gr.WaveformOptions(show_recording_waveform=False))
        image = gr.Image(label="Spectrogram", type="filepath", interactive=False, elem_classes="result-image")
        settings = gr.JSON(label="Settings (the JSON download: they redo this result)", elem_classes="result-settings")
        files = gr.File(label="Downloads: WAV, PNG, JSON", file_count="multiple", interactive=False)
    return [audio, image, settings, files]


# Steps of the sliders, by setting; anything else numeric is a number box.
SLIDER_STEPS = {"steps": 1, "seconds": 0.01, "guidance": 0.5, "strength": 0.05, "transition": 0.5}
# The keys a loop may be asked in, as a list (the declaration takes any spelling parse_key reads).
KEYS = tuple(f"{note} {mode}" for note in NOTE_NAMES for mode in ("major", "minor"))
# The studio's own words where a declaration's help speaks the command line's language (option names, latent
# columns) or a programmer's: (mode or "*", setting) -> (label, help or None for the declaration's). Every other
# setting shows its declaration's.
WORDS = {
    ("generate", "seconds"): ("Seconds", "Length of the clip. With a tempo (typed as BPM, named in the prompt or "
                                         "picked by the model) it becomes the whole bars nearest this."),
    ("generate", "bpm"): ("BPM", "Tempo in beats a minute: the clip is whole bars at it, and the WAV carries it for "
                                 "your DAW. Empty: the prompt's tempo, else the model picks one."),
    ("compose", "bpm"): ("BPM", None),
    ("generate", "bars"): ("Bars", "Length in bars at the BPM (give a BPM too). Empty: the whole bars nearest "
                                   "Seconds."),
    ("generate", "key"): ("Key", "Written into the file name and the WAV's root note. Empty: the model picks."),
    ("generate", "chords"): ("Chords", "One chord a bar, repeated to fill the loop, e.g. Fm Db Ab Eb (they imply the "
                                       "key). Empty: a progression typical of the style. For models trained with "
                                       "chords (mini v3)."),
    ("*", "guidance"): ("Guidance", "How closely the music follows the prompt: higher is closer, lower freer."),
}
# What an optional setting left empty means, shown in its empty box or as its list's empty choice, keyed as WORDS.
EMPTY = {("generate", "bpm"): "let the model pick", ("compose", "bpm"): "none", ("*", "bars"): "from Seconds",
         ("*", "key"): "let the model pick", ("*", "meter"): "let the model pick", ("*", "scheduler"): "the model's",
         ("*", "sample_rate"): "as made", ("*", "encode_steps"): "the model's"}


def _studio(table: dict, mode: str, name: str, default=None):
    """A setting's entry in one of the tables above: its mode's, else every mode's ("*"), else `default`."""
    return table.get((mode, name), table.get(("*", name), default))


def control(mode: str, name: str, **override) -> gr.components.Component:
    """The studio's control for a setting of a mode, made from its declaration (spectrodiff/generation/jobs.py):
    label, help, default and range, the server's limits applied and said; `override` sets anything else (a label, a
    value)."""
    f = JOBS[mode].model_fields[name]
    spec, kind = spec_of(f), optional_kind(f.annotation) or f.annotation
    label, info = _studio(WORDS, mode, name, (name.replace("_", " ").capitalize(), None))
    info = info or spec.help
    high = min(SERVER_HIGHS.get(name, spec.high), spec.high) if spec.high is not None else None
    if kind is not str and high is not None and high < spec.high:
        info += f" At most {number_words(high)} on this server (the command line takes {number_words(spec.high)})."
    options = {"label": label, "info": info, "elem_classes": name.replace("_", "-")}
    if f.default is not REQUIRED and f.default is not None:
        options["value"] = f.default
    options |= override
    choices = KEYS if name == "key" else spec.choices
    if kind is bool:
        return gr.Checkbox(**options)
    if choices:  # an optional setting's empty choice leaves it to its default, and says what that is
        choices = [(c, c) for c in choices] if f.default in choices else [(_studio(EMPTY, mode, name, "default"), ""),
                                                                          *[(c, c) for c in choices]]
        return gr.Dropdown(choices, **{"value": choices[0][1]} | options)
    if kind is str:
        return gr.Textbox(max_length=int(high) if high else None, **options)
    if name in SLIDER_STEPS:
        return gr.Slider(spec.low + (SLIDER_STEPS[name] if spec.above else 0), high, step=SLIDER_STEPS[name],
                         **options)
    # An optional number: a text box, which can be empty (Gradio's number box shows 0), and says what empty is.
    if optional_kind(f.annotation):
        return gr.Textbox(placeholder=_studio(EMPTY, mode, name, "default"), max_lines=1, **options)
    # No precision: Gradio would round 2.5 to 2 and fail on NaN in words of its own; _whole and the job judge it.
    return gr.Number(minimum=spec.low, maximum=high, **options)


def _simple(kind) -> bool:
    """Whether a studio control can hold a setting of this type (files, keyframes and the like have tabs of their
    own)."""
    return (optional_kind(kind) or kind) in (bool, int, float, str)


def more_settings(modes: tuple[str, ...], shown: set[str]) -> dict[str, gr.components.Component]:
    """Controls, in a closed accordion, for every setting of `modes` that a tab does not lay out itself: a setting
    declared in spectrodiff/generation/jobs.py appears here with no change to the studio."""
    names = {name: mode for mode in modes for name, f in JOBS[mode].fields_in_order().items()
             if name not in shown and name not in SERVER_CONTROLLED and _simple(f.annotation)}
    with gr.Accordion("More settings", open=False):
        return {name: control(mode, name) for name, mode in names.items()}


def job_values(mode: str, controls: dict[str, gr.components.Component], data: dict) -> dict:
    """A tab's values for a `mode` job, by setting name (`data`: Gradio's {component: value}); settings the mode does
    not have are left out, and so are optional ones left empty (they take their defaults)."""
    fields, values = JOBS[mode].model_fields, {}
    for name, component in controls.items():
        value = data[component]
        if name not in fields or value is None:
            continue
        kind = optional_kind(fields[name].annotation) or fields[name].annotation
        if isinstance(value, str) and kind in (int, float):  # an optional number's text box
            value = value.strip()
            with contextlib.suppress(ValueError):  # not a number: the job's check says so
                value = float(value)
        if value == "" and optional_kind(fields[name].annotation):
            continue  # left empty: the setting takes its default
        if kind is int:
            value = _whole(value)
        values[name] = value
    return values


@contextlib.contextmanager
def _upload(studio: Studio, path: str | None, kinds: tuple[str, ...] = AUDIO_SUFFIXES, what: str = "an audio file"):
    """The page's upload, checked and kept by the studio for one request (deleted when it ends)."""
    path = uploaded(path, what)
    with studio.upload(path.name, path.read_bytes(), kinds) as kept:
        yield kept


def _perform(studio: Studio, mode: str, values: dict, progress: gr.Progress) -> tuple:
    """A `mode` job of `values`, performed in its turn: (player, spectrogram, settings, downloads)."""
    return _show(studio.perform(studio.job(mode, values), _reporter(progress)))


def _keyframe_kind(name: str) -> type | None:
    """The type of a keyframe setting (`float` for `float | None`), None for a name that is not one."""
    field = Keyframe.model_fields.get(name)
    return None if field is None else optional_kind(field.annotation) or field.annotation


def _timeline_cell(value: object, kind: type | None) -> object:
    """A timeline cell as a value of a keyframe setting of type `kind`; None where the cell is blank (no text, or NaN:
    pandas' empty number). Text that is no number goes on as it is, for the keyframe's check to word."""
    if isinstance(value, str):
        if not value.strip():
            return None
        if kind in (int, float):
            with contextlib.suppress(ValueError):
                value = float(value)
    if value is None or isinstance(value, float) and math.isnan(value):
        return None
    return _whole(value) if kind is int else value


def timeline_keyframes(table) -> list[dict]:
    """The Compose timeline (a DataFrame, read by its headers, or rows of COMPOSE_COLUMNS) as keyframes of the cells
    given: rows without a prompt are skipped, blank cells left out (a row gives seconds or bars; a blank bpm is the
    plan's). Each row is checked as a keyframe (the server's limits too), so that a bad cell names its row."""
    rows = table.to_dict("records") if hasattr(table, "to_dict") else [
        dict(zip(COMPOSE_COLUMNS, row, strict=False)) for row in table]
    keyframes = []
    for row in rows:
        keyframe = {name: cell for name, value in row.items()
                    if (cell := _timeline_cell(value, _keyframe_kind(str(name)))) is not None}
        if "prompt" not in keyframe:
            continue
        try:
            Keyframe.from_dict(keyframe, highs=SERVER_HIGHS)
        except SpectrodiffError as exc:
            raise SpectrodiffError(f"timeline row {len(keyframes) + 1}: {exc}") from None
        keyframes.append(keyframe)
    return keyframes


# Each tab's handler takes the tab's controls as one {component: value} dict (Gradio does so for a set of inputs),
# and is defined once the controls it reads exist.


def generate_tab(studio: Studio) -> None:
    """Generate: a prompt, its length in seconds or bars at a tempo, and a looping player."""
    with gr.Row():
        with gr.Column():
            controls = {"prompt": control("generate", "prompt", value="jazzy saxophone")}
            with gr.Row():
                controls |= {"seed": control("generate", "seed"),
                             "seconds": control("generate", "seconds", value=round(studio.tile_seconds, 2))}
            controls |= {name: control("generate", name) for name in ("guidance", "negative")}
            controls |= {"loop": control("generate", "loop", label="Seamless loop"),
                         "steps": control("generate", "steps")}
            with gr.Row():  # musical time: whole bars at a tempo, the tempo and key written into the WAV
                controls |= {"bpm": control("generate", "bpm", label="BPM"),
                             **{name: control("generate", name) for name in ("bars", "key", "meter")}}
            controls["chords"] = control("generate", "chords")
            controls |= more_settings(("generate",), set(controls))
            button = gr.Button("Generate", variant="primary", elem_id="generate-button")
        outputs = _result_panel(loop=True)
        loop_playback = gr.Checkbox(True, label="Loop playback", elem_classes="loop-playback")

    @_guarded
    def generate(data: dict, progress=PROGRESS):
        return _perform(studio, "generate", job_values("generate", controls, data), progress)

    loop_playback.change(lambda on: gr.update(loop=on), loop_playback, outputs[0])
    button.click(generate, set(controls.values()), outputs, concurrency_id="model", api_name="run_generate")


def morph_tab(studio: Studio) -> None:
    """Morph: from one prompt and seed to another."""
    with gr.Row():
        with gr.Column():
            first = control("generate", "prompt", label="From", value="church bells")
            second = control("generate", "prompt", label="To", value="electronic beats")
            with gr.Row():
                seed_a = control("generate", "seed", label="Seed (from)")
                seed_b = control("generate", "seed", label="Seed (to)", value=1)
            guidance = control("generate", "guidance")
            controls = {"seconds": control("morph", "seconds"), "steps": control("morph", "steps")}
            controls |= more_settings(("morph",), set(controls))
            button = gr.Button("Morph", variant="primary")
        outputs = _result_panel()

    @_guarded
    def morph(data: dict, progress=PROGRESS):
        keyframes = [{"prompt": data[prompt], "seed": _whole(data[seed]), "guidance": data[guidance]}
                     for prompt, seed in ((first, seed_a), (second, seed_b))]
        return _perform(studio, "morph", {"keyframes": keyframes} | job_values("morph", controls, data), progress)

    button.click(morph, {first, second, seed_a, seed_b, guidance, *controls.values()}, outputs,
                 concurrency_id="model", api_name="run_morph")


def compose_tab(studio: Studio) -> None:
    """Compose: a timeline of keyframes, one a row."""
    with gr.Row():
        with gr.Column():
            rows = [[row.get(name, Keyframe.model_fields[name].default) for name in COMPOSE_COLUMNS]
                    for row in DEFAULT_TIMELINE]
            table = gr.Dataframe(value=rows,
                                 headers=COMPOSE_COLUMNS, row_count=len(DEFAULT_TIMELINE),
                                 datatype=["str" if _keyframe_kind(name) is str else "number"
                                           for name in COMPOSE_COLUMNS], column_count=len(COMPOSE_COLUMNS),
                                 label=f"Timeline: one keyframe a row, up to {SERVER_HIGHS['keyframes']}; each row "
                                       "gives seconds, or bars at its bpm (blank bpm: the plan's BPM)")
            with gr.Row():  # the plan's tempo and meter: the bars of every row without a bpm of its own
                controls = {name: control("compose", name) for name in ("bpm", "meter")}
            controls |= {"transition": control("compose", "transition"), "steps": control("compose", "steps")}
            controls |= more_settings(("compose",), set(controls))
            button = gr.Button("Compose", variant="primary")
        outputs = _result_panel()

    @_guarded
    def compose(data: dict, progress=PROGRESS):
        values = {"keyframes": timeline_keyframes(data[table])} | job_values("compose", controls, data)
        return _perform(studio, "compose", values, progress)

    button.click(compose, {table, *controls.values()}, outputs, concurrency_id="model", api_name="run_compose")


def edit_tab(studio: Studio) -> None:
    """Remix / Extend / Inpaint an upload; inpaint's span is shown on the upload's waveform, and a click there
    moves it."""
    with gr.Row():
        with gr.Column():
            source = uploads_only(gr.Audio(label="Your audio (at most 60 s)", type="filepath", sources=["upload"],
                                           format=None))
            mode = gr.Radio(["Remix", "Extend", "Inpaint"], value="Remix", label="Mode")
            controls = {"prompt": control("remix", "prompt", value="church organ"),
                        "seed": control("remix", "seed"), "guidance": control("remix", "guidance"),
                        "strength": control("remix", "strength", label="Strength (remix)"),
                        "seconds": control("extend", "seconds", label="Seconds to add (extend)", value=5)}
            with gr.Row():
                start = control("inpaint", "start", label="Span start, s (inpaint)", value=0.0,
                                elem_classes="span-start")
                end = control("inpaint", "end", label="Span end, s (inpaint)", value=1.0, elem_classes="span-end")
            span = gr.Image(label="Span to regenerate (click the waveform to move its nearer end)",
                            interactive=False, type="pil", elem_classes="span-picture")
            controls |= {"start": start, "end": end, "steps": control("remix", "steps")}
            controls |= more_settings(("remix", "extend", "inpaint"), set(controls) | {"audio"})
            button = gr.Button("Run", variant="primary")
        outputs = _result_panel()

    @_guarded
    def remix_extend_or_inpaint(data: dict, progress=PROGRESS):
        chosen = data[mode].lower()
        with _upload(studio, data[source]) as audio:
            return _perform(studio, chosen, {"audio": audio} | job_values(chosen, controls, data), progress)

    for trigger in (source.change, start.change, end.change):
        trigger(_guarded(waveform_picture), [source, start, end], span)
    span.select(_guarded(pick_span), [source, start, end], [start, end])
    button.click(remix_extend_or_inpaint, {source, mode, *controls.values()}, outputs, concurrency_id="model",
                 api_name="run_edit")


def spectrogram_tools_tab(studio: Studio) -> None:
    """Spectrogram tools: audio to spectrogram PNG and back, no model involved."""
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Audio to spectrogram** (the model's parameters, written into the PNG's EXIF)")
            audio_in = uploads_only(gr.Audio(label="Audio", type="filepath", sources=["upload"], format=None,
                                             elem_classes="tool-audio"))
            bpm = gr.Number(label="BPM of the audio (blank: its acid chunk, else tracked)", value=None,
                            visible=studio.pipe.spectrogram.beat_time,  # only a beat-time model needs a tempo
                            elem_classes="tool-bpm")
            to_image = gr.Button("Audio to image")
            image_out, image_file = gr.Image(label="Spectrogram", type="filepath"), gr.File(label="PNG")
        with gr.Column():
            gr.Markdown("**Spectrogram to audio** (any spectrogram PNG with its EXIF, Riffusion's too)")
            image_in = uploads_only(gr.File(label="Spectrogram PNG", file_types=list(IMAGE_SUFFIXES)))
            to_audio = gr.Button("Image to audio")
            audio_out, audio_file = gr.Audio(label="Audio", type="filepath"), gr.File(label="WAV")

    @_guarded
    def audio_to_image(path, tempo):
        with _upload(studio, path) as audio:
            png = studio.audio_to_image(audio, tempo or None)
        return str(png), str(png)

    @_guarded
    def image_to_audio(path):
        with _upload(studio, path, IMAGE_SUFFIXES, "a spectrogram PNG") as image:
            wav = studio.image_to_audio(image)
        return str(wav), str(wav)

    to_image.click(audio_to_image, [audio_in, bpm], [image_out, image_file], api_name="run_audio_to_image")
    to_audio.click(image_to_audio, [image_in], [audio_out, audio_file], api_name="run_image_to_audio")


TABS = (("Generate", generate_tab), ("Morph", morph_tab), ("Compose", compose_tab),
        ("Remix / Extend / Inpaint", edit_tab), ("Spectrogram tools", spectrogram_tools_tab))


def build_studio(studio: Studio) -> gr.Blocks:
    """The studio page over `studio` (its queue lets one job run at a time; others wait their turn)."""
    with gr.Blocks(title="spectrodiff studio", analytics_enabled=False, delete_cache=(600, 3600)) as page:
        gr.Markdown(f"# spectrodiff studio\nModel **{studio.model_info()['model']}**: text to music through "
                    f"spectrograms. One job runs at a time; yours waits its turn. API: [/docs](/docs).")
        for title, build_tab in TABS:
            with gr.Tab(title):
                build_tab(studio)
    # Gradio refuses a request's file that is not in its upload folder only once launch() has set has_launched
    # (processing_utils._check_allowed); mounted (server.py), the page sets it itself, or any request could have
    # any server path read, /dev/zero included.
    page.has_launched = True
    return page
