"""The studio page (Gradio) against a running server: its Gradio API reads only what was uploaded to it, and the
page speaks a producer's words (checked in Debian's Chromium, with a screenshot kept in test-artifacts/)."""

import io
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import soundfile
from PIL import Image
from starlette.routing import Mount

from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.jobs import ComposeJob
from spectrodiff.generation.musical import MAX_BARS
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.web import GRADIO_CACHE, Studio
from spectrodiff.web.studio import COMPOSE_COLUMNS, timeline_keyframes

from .test_web import ARTIFACTS, RunningServer, studio_page

# Components whose value is a file (Gradio's FileData): every endpoint taking one is asked for a server path.
FILE_COMPONENTS = {"Audio", "File", "Image", "Video", "Gallery"}


@pytest.fixture(scope="module")
def server():
    pipe = SpectrodiffPipeline.load("mini")
    pipe.set_progress_bar_config(disable=True)
    with RunningServer(Studio(pipe)) as running:
        yield running


def file_data(path: str | Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def gradio_call(url: str, name: str, data: list, timeout: float = 60) -> tuple[str, object]:
    """(event, data) of `name` called through the studio's Gradio API as any client may: POST the inputs, then read
    the event stream to its last event ("complete" or "error")."""
    posted = httpx.post(f"{url}/gradio_api/call/{name}", content=json.dumps({"data": data}),  # NaN as a client may
                        headers={"content-type": "application/json"}, timeout=timeout)
    assert posted.status_code == 200, posted.text
    stream = httpx.get(f"{url}/gradio_api/call/{name}/{posted.json()['event_id']}", timeout=timeout).text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], json.loads(payloads[-1])


def defaults(parameters: list[dict]) -> list:
    """Inputs a client would send untouched: each control's default, empty text where a box starts empty."""
    return [p["parameter_default"] if p["parameter_has_default"] else "" if p["component"] == "Textbox"
            else p["example_input"] for p in parameters]


def file_endpoints(url: str) -> dict[str, tuple[list, list[int]]]:
    """{endpoint: (inputs with their defaults, indices of the file inputs)} for every endpoint taking a file."""
    found = {}
    for name, endpoint in httpx.get(f"{url}/gradio_api/info", timeout=30).json()["named_endpoints"].items():
        parameters = endpoint["parameters"]
        files = [n for n, p in enumerate(parameters) if p["component"] in FILE_COMPONENTS]
        if files:
            found[name.removeprefix("/")] = (defaults(parameters), files)
    return found


NOISE_BPM = 120  # mini hears in beats: noise has no beat to track, so its tempo is given


def cached_names() -> set[str]:
    return {path.name for path in Path(GRADIO_CACHE).rglob("*")}


def test_the_studio_api_reads_only_files_uploaded_to_it(server, tmp_path):
    """Hostile 1: every studio endpoint taking a file, asked for a file elsewhere on the server (a private WAV or PNG,
    /etc/hostname, /dev/zero), refuses without reading it and without naming Gradio's cache folder;
    the same WAV uploaded through /gradio_api/upload (the control) is converted."""
    endpoints = file_endpoints(server.url)
    # The discovery itself is checked: these handlers take a file.
    assert {"run_edit", "run_audio_to_image", "run_image_to_audio", "waveform_picture", "pick_span"} <= set(endpoints)
    rng = np.random.default_rng(0)
    for name, (defaults, slots) in endpoints.items():
        for slot in slots:
            private = tmp_path / f"private-{name}-{slot}.wav"
            soundfile.write(private, rng.normal(0, 0.1, 22050).astype(np.float32), 22050)
            if name == "run_image_to_audio":  # a PNG input: a private picture
                private = private.with_suffix(".png")
                Image.fromarray(rng.integers(0, 255, (512, 100), np.uint8)).save(private)
            for target in (private, "/etc/hostname"):
                data = list(defaults)
                data[slot] = file_data(target)
                event, answer = gradio_call(server.url, name, data)
                assert event == "error", (name, target, answer)
                assert private.name not in cached_names() and "hostname" not in cached_names(), (name, target)
                message = json.dumps(answer)
                assert GRADIO_CACHE not in message and str(server.studio.root) not in message, message
    # A device that never ends is refused at once: it used to freeze the server.
    data, slots = endpoints["waveform_picture"]
    start = time.monotonic()
    event, answer = gradio_call(server.url, "waveform_picture", [file_data("/dev/zero"), *data[1:]], timeout=10)
    assert event == "error" and time.monotonic() - start < 5, answer
    assert GRADIO_CACHE not in answer["error"], answer

    # The control: the same kind of file, uploaded the way the page uploads it, is read.
    mine = tmp_path / "mine.wav"
    soundfile.write(mine, rng.normal(0, 0.1, 22050).astype(np.float32), 22050)
    with mine.open("rb") as handle:
        uploaded = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("mine.wav", handle)}).json()
    assert Path(uploaded[0]).is_relative_to(GRADIO_CACHE)
    event, answer = gradio_call(server.url, "run_audio_to_image", [file_data(uploaded[0]), NOISE_BPM])
    assert event == "complete" and answer[0]["orig_name"] == "mine.png", answer
    # A bad upload is refused in words that name no cache path.
    uploaded = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("bad.wav", b"not audio")}).json()
    for name in ("run_audio_to_image", "run_edit"):
        data, slots = endpoints[name]
        event, answer = gradio_call(server.url, name, [file_data(uploaded[0]), *data[1:]])
        assert event == "error" and "bad.wav is not a readable audio file" in answer["error"], answer
        assert GRADIO_CACHE not in answer["error"], answer


def test_folders_and_urls_are_no_uploads_and_uploads_go_when_their_request_ends(server, tmp_path):
    """A folder inside Gradio's upload folder passed its upload check and was listed among its temporary files (its
    cache clean-up then failed on it for good), and an http(s) "path" would be downloaded into its cache: both are
    refused before Gradio moves anything. The studio's own copy of a page upload goes when its request ends."""
    rng = np.random.default_rng(1)
    mine = tmp_path / "mine.wav"
    soundfile.write(mine, rng.normal(0, 0.1, 22050).astype(np.float32), 22050)
    with mine.open("rb") as handle:
        uploaded = httpx.post(f"{server.url}/gradio_api/upload", files={"files": ("mine.wav", handle)}).json()[0]
    page = next(route.app for route in server.server.config.app.routes if isinstance(route, Mount)).get_blocks()

    def temporary_files() -> set[str]:
        return {str(path) for files in page.temp_file_sets for path in files}

    for target in (Path(uploaded).parent, GRADIO_CACHE, "http://127.0.0.1:9/x.wav"):
        before = temporary_files()
        event, answer = gradio_call(server.url, "run_audio_to_image", [file_data(target), NOISE_BPM])
        assert event == "error" and answer["error"] == "upload a file first", (target, answer)
        assert temporary_files() == before, target
    # The control: the uploaded file itself converts; the studio's copy of it is gone afterwards.
    event, answer = gradio_call(server.url, "run_audio_to_image", [file_data(uploaded), NOISE_BPM])
    assert event == "complete", answer
    assert not any((server.studio.root / "uploads").iterdir())


def endpoint_inputs(url: str, name: str) -> tuple[list, list[str]]:
    """(default inputs, labels) of a studio endpoint."""
    parameters = httpx.get(f"{url}/gradio_api/info", timeout=30).json()["named_endpoints"][f"/{name}"]["parameters"]
    return defaults(parameters), [p["label"] for p in parameters]


def test_nan_and_words_in_number_boxes_get_the_jobs_own_message(server):
    """Hostile 16: NaN steps said "cannot convert float NaN to integer"; now the job's words, as on every face."""
    data, labels = endpoint_inputs(server.url, "run_generate")
    cases = [("Steps", float("nan"), "steps must be a whole number, got nan"),
             ("Seed", float("nan"), "seed must be a whole number, got nan"),
             ("BPM", "fast", "bpm must be a number, got 'fast'"),
             ("BPM", "nan", "bpm is not a number, got nan"),
             ("Bars", "2.5", "bars must be a whole number, got 2.5")]
    for label, value, message in cases:
        asked = list(data)
        asked[labels.index(label)] = value
        event, answer = gradio_call(server.url, "run_generate", asked)
        assert event == "error" and answer["error"] == message, (label, value, answer)


# Two sections of a timeline in bars, each at a tempo of its own; the third row, with no prompt, is no keyframe.
# Columns: COMPOSE_COLUMNS (prompt, seed, seconds, bars, bpm, guidance); None and "" are blank cells.
TIMELINE_IN_BARS = [["verse", 0, None, 2, 90, 7.0], ["chorus", 1, "", 4, 120, 5.5], ["", 2, 8, None, None, 7.0]]


def test_a_timeline_in_bars_at_two_tempi_becomes_keyframes_of_the_cells_given():
    """The Compose tab's rows in bars, each at its bpm, become keyframes with those bars and bpm; blank cells are left
    out (the keyframe's default: seconds worked out from the bars, the plan's bpm), as rows or as the DataFrame
    Gradio hands over (NaN for an empty number, floats for whole numbers), which is read by its headers."""
    expected = [{"prompt": "verse", "seed": 0, "bars": 2, "bpm": 90, "guidance": 7.0},
                {"prompt": "chorus", "seed": 1, "bars": 4, "bpm": 120, "guidance": 5.5}]
    assert timeline_keyframes(TIMELINE_IN_BARS) == expected
    table = pd.DataFrame([[None if cell == "" else cell for cell in row] for row in TIMELINE_IN_BARS],
                         columns=COMPOSE_COLUMNS)
    from_gradio = timeline_keyframes(table.astype({name: float for name in ("seed", "seconds", "bars", "bpm")}))
    assert from_gradio == expected and all(type(k["bars"]) is int and type(k["seed"]) is int for k in from_gradio)
    plan = ComposeJob.from_dict({"keyframes": from_gradio})
    assert [(k.bars, k.bpm, round(k.seconds, 3)) for k in plan.keyframes] == [(2, 90, 5.333), (4, 120, 8.0)]
    # A blank bpm is the plan's; a table of the old four columns is still read by its headers.
    assert timeline_keyframes([["verse", 0, None, 2, "", 7.0]]) == [{"prompt": "verse", "seed": 0, "bars": 2,
                                                                    "guidance": 7.0}]
    old = pd.DataFrame([["verse", 3, 8.0, 6.0]], columns=["prompt", "seed", "seconds", "guidance"])
    assert timeline_keyframes(old) == [{"prompt": "verse", "seed": 3, "seconds": 8.0, "guidance": 6.0}]


@pytest.mark.parametrize(("column", "value", "message"), [
    ("bars", 0, f"bars must be between 1 and {MAX_BARS}, got 0"),
    ("bars", 2.5, "bars must be a whole number, got 2.5"),
    ("bpm", "fast", "bpm must be a number, got 'fast'"),
    ("bpm", 10_000, "bpm must be between "),
    ("seconds", 61, "seconds must be in (0, 60], got 61"),  # the server's limit, not the command line's 600
    ("seed", -1, "seed must be between 0 and "),
])
def test_a_bad_timeline_cell_names_its_row(column, value, message):
    """A bad cell is one line naming its row (rows are counted as keyframes: the row without a prompt is none) in the
    keyframe's own words; the same timeline with the cell good (the control) passes."""
    rows = [list(row) for row in TIMELINE_IN_BARS]
    rows.insert(1, ["", 0, None, None, None, 7.0])
    assert len(timeline_keyframes(rows)) == 2
    rows[2][COMPOSE_COLUMNS.index(column)] = value
    with pytest.raises(SpectrodiffError) as refused:
        timeline_keyframes(rows)
    assert str(refused.value).startswith(f"timeline row 2: {message}"), str(refused.value)


def test_the_studio_composes_a_timeline_in_bars_at_two_tempi(server):
    """Through the studio's Gradio API, as the page sends its table (blank cells null): one bar at 90 BPM, then one
    at 120, make a clip of 60 * 4 / 90 + 60 * 4 / 120 s whose settings keep each section's bars and bpm; the same
    table with a bad bars cell (the control) is refused in words naming its row."""
    data, labels = endpoint_inputs(server.url, "run_compose")
    table = next(n for n, label in enumerate(labels) if label.startswith("Timeline"))
    data[labels.index("Steps")] = 1
    rows = [["verse", 0, None, 1, 90, 7.0], ["chorus", 1, None, 1, 120, 7.0]]
    data[table] = {"headers": COMPOSE_COLUMNS, "data": rows}
    event, answer = gradio_call(server.url, "run_compose", data, timeout=120)
    assert event == "complete", answer
    assert [(k["bars"], k["bpm"]) for k in answer[2]["job"]["keyframes"]] == [(1, 90), (1, 120)]
    audio, rate = soundfile.read(io.BytesIO(httpx.get(answer[0]["url"], timeout=30).content))
    assert len(audio) / rate == pytest.approx(60 * 4 / 90 + 60 * 4 / 120, abs=0.02)
    rows[1][COMPOSE_COLUMNS.index("bars")] = 0
    event, answer = gradio_call(server.url, "run_compose", data)
    assert event == "error" and answer["error"] == f"timeline row 2: bars must be between 1 and {MAX_BARS}, got 0", \
        answer


OPTION_NAME = re.compile(r"--[a-z]")


@pytest.mark.browser
def test_the_studio_page_speaks_a_producers_words(server):
    """The page as Chromium renders it after its JavaScript runs: empty BPM and Bars say what empty means, Key is a
    list of keys, limits tighter than the command line's are said, and no tab shows a command-line option name.
    Screenshots: test-artifacts/studio-page.png, and studio-keys.png with the Key list open."""
    with studio_page(server) as page:
        bpm, bars = page.locator(".bpm input").first, page.locator(".bars input").first
        assert (bpm.input_value(), bpm.get_attribute("placeholder")) == ("", "let the model pick")
        assert (bars.input_value(), bars.get_attribute("placeholder")) == ("", "from Seconds")
        page.screenshot(path=ARTIFACTS / "studio-page.png", full_page=True)
        key = page.locator(".key input").first
        assert key.input_value() == "let the model pick"
        key.click()
        options = [text.strip("✓\n ") for text in page.get_by_role("option").all_inner_texts()]
        page.screenshot(path=ARTIFACTS / "studio-keys.png", full_page=True)
        page.keyboard.press("Escape")
        texts = []
        for tab in ("Generate", "Morph", "Compose", "Remix / Extend / Inpaint", "Spectrogram tools"):
            page.get_by_role("tab", name=tab).click()
            for accordion in page.get_by_text("More settings").all():
                if accordion.is_visible():
                    accordion.click()
            texts.append(page.locator("body").inner_text())
    assert options[0] == "let the model pick" and len(options) == 25 and {"F minor", "C# major"} <= set(options)
    visible = "\n".join(texts)
    # The control: the words that replaced the declaration's are on the page, so the search below reads real text.
    assert "Empty: the prompt's tempo, else the model picks one." in texts[0]
    assert "At most 100 on this server (the command line takes 1000)." in texts[0]
    assert OPTION_NAME.search("Length in bars (needs --bpm)") and not OPTION_NAME.search(visible), \
        OPTION_NAME.findall(visible)
    assert "latent" not in visible
    assert all((ARTIFACTS / name).stat().st_size > 10_000 for name in ("studio-page.png", "studio-keys.png"))
