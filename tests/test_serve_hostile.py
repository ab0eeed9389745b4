"""`spectrodiff serve` against hostile and Riffusion's requests (issue 26): strict JSON, numbers and text that used to
be 500s, Riffusion's app's whole request space, uploads deleted with their request, the spectrogram tools queued,
slow clients timed out, SIGTERM that does not wait for the running job. Fast tests drive `create_app` over the tiny
pipeline in process; those marked slow run a real `serve` on loopback."""

import contextlib
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient
from PIL import Image

from spectrodiff.signals import mix
from spectrodiff.web import Studio, create_app
from spectrodiff.web.service import MASKS, MAX_WAITING, SEED_SIGNALS, Busy, Stopping

HUGE = "9" * 400  # a 400-digit number: an OverflowError (500) where a float was made of it


@pytest.fixture(scope="module")
def studio(pipe):
    pipe.set_progress_bar_config(disable=True)
    made = Studio(pipe)
    yield made
    made.close()


@pytest.fixture(scope="module")
def client(studio):
    with TestClient(create_app(studio), raise_server_exceptions=False) as test_client:
        yield test_client


def wav_bytes(seconds: float = 2.0) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, mix(seconds), 44100, format="WAV")
    return buffer.getvalue()


def post_json(client, path: str, text: str):
    return client.post(path, content=text, headers={"content-type": "application/json"})


def riffusion_body(**changes) -> dict:
    return {"alpha": 0.5, "num_inference_steps": 1, "seed_image_id": "og_beat", "mask_image_id": None,
            "start": {"prompt": "church bells", "seed": 1, "denoising": 0.75, "guidance": 7},
            "end": {"prompt": "electronic beats", "seed": 2, "denoising": 0.75, "guidance": 7}} | changes


# ---- strict JSON (hostile 12) and numbers or text that were 500s (hostile 10) --------------------------------------

@pytest.mark.parametrize("text, message", [
    ('{"prompt": "x", "steps": 1, "bmp": 120}', "unknown field 'bmp'"),
    ('{"prompt": "x", "steps": 1, "bpm": true}', "bpm: Input should be a valid number"),
    ('{"prompt": "x", "steps": 1, "bpm": "120"}', "bpm: Input should be a valid number"),
    ('{"prompt": "x", "steps": "1"}', "steps: Input should be a valid integer"),
    ('{"prompt": "x", "steps": 1.5}', "steps: Input should be a valid integer"),
])
def test_json_requests_refuse_unknown_fields_and_other_types(client, text, message):
    """The command line and batch refuse these; the API dropped "bmp" and read true as 1 and "120" as 120."""
    response = post_json(client, "/api/generate", text)
    assert (response.status_code, response.json()["detail"]) == (422, message)


def test_keyframes_are_strict_too_and_a_whole_number_is_a_number(client):
    morph = '{"keyframes": [{"prompt": "a", "sed": 1}, {"prompt": "b"}], "steps": 1, "seconds": 1}'
    assert post_json(client, "/api/morph", morph).json()["detail"] == "keyframes.0: unknown field 'sed'"
    # The control: JSON has one kind of number, so guidance 7 (as JavaScript writes 7.0) is a number.
    assert post_json(client, "/api/generate", '{"prompt": "x", "steps": 1, "guidance": 7}').status_code == 200


@pytest.mark.parametrize("path, text, message", [
    ("/api/generate", f'{{"prompt": "x", "seed": {HUGE}}}', "seed must be between 0 and 4294967295, got a 400-digit"),
    ("/api/generate", f'{{"prompt": "x", "steps": {HUGE}}}', "steps must be between 1 and 100, got a 400-digit"),
    ("/api/generate", '{"prompt": "a \\ud800 b", "steps": 1}', "prompt is not valid text (a lone surrogate)"),
    ("/run_inference/", json.dumps(riffusion_body(start={"prompt": "x", "seed": 1})).replace('"seed": 1', HUGE.join(
        ['"seed": ', ""])), "start: seed must be between 0 and 4294967295, got a 400-digit number"),
    ("/run_inference/", json.dumps(riffusion_body()).replace('"num_inference_steps": 1', f'"num_inference_steps": '
                                                              f'{HUGE}'), "steps must be between 1 and 100"),
    ("/run_inference/", json.dumps(riffusion_body()).replace("church bells", "\\udfff"), "not valid text"),
])
def test_huge_numbers_and_lone_surrogates_are_4xx(client, path, text, message):
    response = post_json(client, path, text)
    assert response.status_code in (400, 422) and message in response.json()["detail"], response.text


def test_a_huge_number_in_an_upload_form_is_4xx(client, studio):
    for field in ("seed", "steps"):
        response = client.post("/api/remix", files={"file": ("a.wav", wav_bytes())}, data={"prompt": "x", field: HUGE})
        assert response.status_code == 422 and "got a 400-digit number" in response.json()["detail"], response.text
    assert not any((studio.root / "uploads").iterdir())


def test_compose_with_a_tempo(client):
    """POST /api/compose with "bpm" was a 500 (hostile 2): keyframes of whole bars at the tempo."""
    response = client.post("/api/compose", json={"keyframes": [{"prompt": "a", "seconds": 2}, {"prompt": "b",
                                                                                                 "seconds": 2}],
                                                 "bpm": 120, "steps": 1, "transition": 0.5})
    assert response.status_code == 200, response.text
    assert response.json()["seconds"] == pytest.approx(4.0, abs=0.02)  # one 4/4 bar at 120 BPM each


# ---- Riffusion's seed images and masks -----------------------------------------------------------------------------

def test_an_empty_or_null_mask_is_no_mask(client):
    """Riffusion's app sends "mask_image_id": "" for ?maskImageId=none; it was a 422 and the app's page crashed."""
    answers = [client.post("/run_inference/", json=riffusion_body(**mask)) for mask in
               ({"mask_image_id": ""}, {"mask_image_id": None}, {})]
    assert [a.status_code for a in answers] == [200] * 3
    assert answers[0].json()["audio"] == answers[1].json()["audio"] == answers[2].json()["audio"]


def test_riffusions_named_seeds_and_masks_are_known(client, studio):
    known = set(client.get("/api/info").json()["seed_images"])
    assert set(SEED_SIGNALS) | set(MASKS) <= known and {"og_beat", "mask_beat_lines_80", "mask_top_third_95"} <= known
    plain = client.post("/run_inference/", json=riffusion_body(alpha=1.0)).json()["audio"]
    masked = client.post("/run_inference/", json=riffusion_body(alpha=1.0, mask_image_id="mask_top_third_75"))
    assert masked.status_code == 200 and masked.json()["audio"] != plain
    unknown = client.post("/run_inference/", json=riffusion_body(mask_image_id="mask_nosuch"))
    assert unknown.status_code == 400
    assert unknown.json()["detail"].startswith("unknown mask image 'mask_nosuch'; known: 0, agile, chill_soul_1, ")
    # Drawn from their names: the top third (high frequencies) at 75 % grey, repainted; the rest black, kept.
    mask = np.asarray(Image.open(studio.seed_images["mask_top_third_75"]))
    third = round(mask.shape[0] / 3)
    assert (mask[:third] == 191).all() and (mask[third:] == 0).all()
    beats = np.asarray(Image.open(studio.seed_images["mask_beat_lines_80"]))[0]
    lines = {column for beat in range(0, beats.size, 50) for column in range(beat, beat + 8)}  # 120 BPM at 10 ms
    assert set(np.flatnonzero(beats == 0)) == lines


# ---- uploads, the tools' queue, stopping -------------------------------------------------------------------------

def spectrogram_png(client) -> bytes:
    return client.post("/api/audio-to-image", files={"file": ("a.wav", wav_bytes())}).content


def test_uploads_are_deleted_when_their_request_ends(client, studio):
    """Uploads stayed until the server stopped, even refused ones (10 rejected 5 MB remixes: +51 MB)."""
    uploads = studio.root / "uploads"
    files = {"file": ("a.wav", wav_bytes())}
    assert client.post("/api/remix", files=files, data={"prompt": "x", "steps": 1}).status_code == 200
    assert client.post("/api/remix", files=files, data={"prompt": "x", "strength": 5}).status_code == 422
    assert client.post("/api/extend", files=files, data={"prompt": "x", "seconds": 600}).status_code == 422
    png = spectrogram_png(client)
    assert client.post("/api/image-to-audio", files={"file": ("a.png", png)}).status_code == 200
    assert not any(uploads.iterdir()), list(uploads.rglob("*"))
    assert any((studio.root / "results").iterdir())  # results stay


def test_a_one_pixel_wide_spectrogram_is_refused(client):
    """A 1-pixel-wide PNG (hostile 13) gave an empty WAV and 200."""
    image = Image.open(io.BytesIO(spectrogram_png(client)))
    one = io.BytesIO()
    image.crop((0, 0, 1, image.height)).save(one, format="PNG", exif=image.getexif())
    response = client.post("/api/image-to-audio", files={"file": ("one.png", one.getvalue())})
    assert response.status_code == 400 and "\n" not in response.json()["detail"], response.text


def test_the_spectrogram_tools_wait_for_the_model_like_jobs(studio, tmp_path):
    """Three conversions in parallel held 9 GB (hostile 3): they now take the model's turn one at a time."""
    audio = tmp_path / "a.wav"
    audio.write_bytes(wav_bytes())
    done = []
    with studio._lock:  # the model is busy
        worker = threading.Thread(target=lambda: done.append(studio.audio_to_image(audio)))
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and not done
    worker.join(30)
    assert done and done[0].suffix == ".png"
    studio._waiting = MAX_WAITING  # a full queue refuses them (503) as it refuses jobs
    try:
        with pytest.raises(Busy):
            studio.audio_to_image(audio)
    finally:
        studio._waiting = 0


def test_an_8_channel_flac_at_655_khz_is_converted_in_bounded_memory(studio, tmp_path):
    """A 340 KB FLAC (59.5 s, 8 channels, 655,350 Hz) took 4.03 GB in /api/audio-to-image. 10 s of it decode to 210
    MB of float32 at once; the server's loader reads it in blocks (or refuses it)."""
    flac = tmp_path / "wide.flac"
    with soundfile.SoundFile(flac, "w", 655350, 8, format="FLAC") as out:
        for _ in range(10):
            out.write(np.zeros((655350, 8), np.float32))
    tracemalloc.start()
    try:
        with contextlib.suppress(Exception):  # refused is fine too; memory is the point
            studio.audio_to_image(flac)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_stop_ends_the_running_job_at_its_next_step(studio):
    job = studio.job("generate", {"prompt": "long", "steps": 100, "seconds": 60})
    results = set((studio.root / "results").iterdir())
    threading.Timer(1.0, studio.stop).start()
    start = time.monotonic()
    try:
        with pytest.raises(Stopping):
            studio.perform(job)
    finally:
        studio._stopping.clear()
    assert time.monotonic() - start < 10
    assert set((studio.root / "results").iterdir()) == results  # its folder removed


# ---- a real `serve` on loopback ------------------------------------------------------------------------------------

SERVE = """
import sys
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.web import Studio, serve
from spectrodiff.web.server import ConnectionLimits
pipe = SpectrodiffPipeline.load(sys.argv[1])
pipe.set_progress_bar_config(disable=True)
serve(Studio(pipe), port=int(sys.argv[2]), access_log=True,
      limits=ConnectionLimits(header_seconds=1.0, body_seconds=2.0, keep_alive_seconds=1.0, connections=40))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_serve(command: list[str], port: int, log: Path):
    """A `serve` process on 127.0.0.1:`port` (its stderr in `log`), up and answering, stopped at the end."""
    with open(log, "w") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err,
                                   env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.3)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory):
    """`serve` over the tiny model with short client deadlines (1 s for headers, 2 s for a body) and 40 connections."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "stderr.txt"
    with running_serve([sys.executable, "-c", SERVE, str(model_dir), str(port)], port, log):
        yield f"http://127.0.0.1:{port}", port, log


def js_int(text: str):
    """What riffusion-app-hobby sends for parseInt(text): JavaScript's double, JSON.stringify'd (NaN, Infinity:
    null; 1e21 and above: exponent notation, a float in Python)."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return js_number(int(match.group(1)) if match else math.nan)


def js_float(text: str):
    match = re.match(r"\s*([+-]?(Infinity|\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?))", text)
    return js_number(float(match.group(1)) if match else math.nan)


def js_number(value: float):
    try:
        value = float(value)
    except OverflowError:
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def app_request(query: dict[str, str], alpha: float = 0.25) -> dict:
    """The JSON body riffusion-app-hobby (components/ModelInference.tsx, pages/index.tsx) posts to /run_inference/
    for its URL parameters, its defaults where a parameter is absent (the app's steps default, 50, is lowered to 2
    unless the case sets it: the tiny model takes the same path)."""
    seed = js_int(query["seed"]) if query.get("seed") else 123
    denoising = js_float(query["denoising"]) if query.get("denoising") else 0.75
    guidance = js_float(query["guidance"]) if query.get("guidance") else 7
    prompt = query.get("prompt") or "lo-fi beat for the holidays"
    mask = None
    if query.get("maskImageId"):
        mask = "" if query["maskImageId"] == "none" else query["maskImageId"]
    return {"alpha": alpha,
            "num_inference_steps": js_int(query["numInferenceSteps"]) if query.get("numInferenceSteps") else 2,
            "seed_image_id": query.get("seedImageId") or "og_beat", "mask_image_id": mask,
            "start": {"prompt": prompt, "seed": seed, "denoising": denoising, "guidance": guidance},
            "end": {"prompt": prompt, "seed": None if seed is None else js_number(seed + 1), "denoising": denoising,
                    "guidance": guidance}}


# (URL parameters, Riffusion's server's answer, ours where it differs). Riffusion's server answers 400 to a value of
# the wrong type or a missing one (dacite), and 500 where it crashes (an unknown seed image: FileNotFoundError; a seed
# beyond 64 bits: torch's RuntimeError; 0 steps); ours answers those with a 400 that says why.
APP_REQUESTS = [
    ({}, 200, 200),
    ({"prompt": "jazzy saxophone"}, 200, 200),
    ({"prompt": "Café ☕ — 日本の太鼓"}, 200, 200),
    ({"seed": "42"}, 200, 200),
    ({"seed": "4294967295"}, 200, 200),  # the end's seed + 1 wraps to 0
    ({"seed": "-5"}, 200, 200),
    ({"seed": "abc"}, 400, 400),
    ({"seed": "99999999999999999999"}, 500, 400),  # 1e20, beyond torch's 64 bits
    ({"seed": "1" + "0" * 400}, 400, 400),
    ({"denoising": "0.3"}, 200, 200),
    ({"denoising": "1"}, 200, 200),
    ({"denoising": "x"}, 400, 400),
    ({"denoising": "Infinity"}, 400, 400),
    ({"guidance": "0"}, 200, 200),
    ({"guidance": "12.5"}, 200, 200),
    ({"guidance": "NaN"}, 400, 400),
    ({"numInferenceSteps": "1"}, 200, 200),
    ({"numInferenceSteps": "50"}, 200, 200),
    ({"numInferenceSteps": "0"}, 500, 400),
    ({"numInferenceSteps": "many"}, 400, 400),
    *[({"seedImageId": name}, 200, 200) for name in ("og_beat", "agile", "marim", "motorway", "vibes")],
    ({"seedImageId": "nosuch"}, 500, 400),
    ({"maskImageId": "none"}, 200, 200),
    *[({"maskImageId": name}, 200, 200) for name in ("mask_beat_lines_80", "mask_gradient_dark",
                                                     "mask_gradient_top_70", "mask_top_third_95")],
    ({"maskImageId": "nosuch"}, 500, 400),
    ({"seedImageId": "vibes", "maskImageId": "mask_top_third_75", "denoising": "0.6", "seed": "7"}, 200, 200),
]


@pytest.mark.slow
def test_riffusions_app_request_space_against_serve(served):
    """Every URL parameter of riffusion-app-hobby, turned into the body the app posts, against a real `serve`: a clip
    wherever Riffusion's server answers with one, a one-line 400 wherever it refuses or crashes."""
    url, _, log = served
    with httpx.Client(base_url=url, timeout=120) as http:
        for query, _riffusion, expected in APP_REQUESTS:
            body = app_request(query)
            response = http.post("/run_inference/", json=body)
            assert response.status_code == expected, (query, response.text[:300])
            if expected == 200:
                answer = response.json()
                assert answer["image"].startswith("data:image/jpeg;base64,"), query
                assert answer["audio"].startswith("data:audio/mpeg;base64,") and answer["duration_s"] > 5, query
            else:
                detail = response.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail and len(detail) < 400, (query, detail)
    # --access-log: one line per request with its time
    time.sleep(0.5)
    lines = [line for line in log.read_text().splitlines() if '"POST /run_inference/"' in line]
    assert len(lines) >= len(APP_REQUESTS)
    assert re.fullmatch(r'127\.0\.0\.1 "POST /run_inference/" 200 \d+\.\d{3} s', lines[0]), lines[0]


def open_connections(pid: int) -> int:
    """TCP sockets the process holds."""
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd).startswith("socket:"))


@pytest.mark.slow
def test_slow_clients_are_timed_out_and_connections_capped(served):
    """350 half-sent requests were held for ever (and 20,000 ran the server out of file descriptors): now headers
    must arrive within their deadline and a body within its own (408, closed), and past the cap a new connection
    is answered 503 and closed at once. A whole request right after is answered (the control)."""
    url, port, _ = served

    def connect(first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(first)
        return sock

    def answer(sock: socket.socket) -> bytes:
        with contextlib.suppress(OSError):
            return sock.recv(4096)
        return b""

    half_headers = [connect(b"GET /api/info HTTP/1.1\r\nHost: x\r\n") for _ in range(20)]
    half_body = connect(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n{\"prompt\": ")
    extra = [connect(b"GET /api/info HTTP/1.1\r\nHost: x\r\n") for _ in range(30)]
    capped = [answer(sock) for sock in extra[-5:]]
    assert all(reply.startswith(b"HTTP/1.1 503") for reply in capped), capped
    time.sleep(2.5)
    replies = [answer(sock) for sock in half_headers] + [answer(half_body)]
    assert all(reply.startswith(b"HTTP/1.1 408") for reply in replies), set(replies)
    for sock in half_headers + extra + [half_body]:
        sock.close()
    assert httpx.get(f"{url}/api/info", timeout=10).status_code == 200


@pytest.mark.slow
def test_sigterm_stops_the_running_job_and_serve_exits_143(model_dir, tmp_path):
    """SIGTERM to `serve` waited for the running job (hostile 17): it now stops at its next step, the temporary
    folders go and the exit status is 143. Through the command line, with --access-log."""
    port, log = free_port(), tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "spectrodiff.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--access-log"]
    with running_serve(command, port, log) as process:
        def long_job() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"http://127.0.0.1:{port}/api/generate", json={"prompt": "long", "steps": 100,
                                                                          "seconds": 60}, timeout=120)

        job = threading.Thread(target=long_job, daemon=True)
        job.start()
        time.sleep(3)  # the job is running
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(60)
        took = time.monotonic() - start
    assert status == 143 and took < 15, (status, took, log.read_text()[-1500:])
    assert '"GET /api/info" 200' in log.read_text()
