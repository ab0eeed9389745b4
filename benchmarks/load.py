"""Load test of `spectrodiff serve`: a server on loopback, N requests from C concurrent clients.

    python benchmarks/load.py [--requests 50] [--clients 8] [--steps 25] [--model mini] [--json OUT]

Starts `spectrodiff serve` on 127.0.0.1 (never another address) at a free port, sends a mix of
`POST /api/generate` (5.12 s loops) and Riffusion's `POST /run_inference/` from the clients, each waiting for its
answer before sending the next, and reports status counts (the bar: no 5xx), latency percentiles, throughput and
the server's peak resident memory (VmHWM). At most 500 requests and 32 clients.

Then the upload mix (`--no-uploads` skips it): 8 generates, 2 audio-to-image and 2 remix uploads of 59.9 s of
stereo at once, with the server's peak RSS after it and its RSS once idle again (the bars: under 2.5 GB, and back
down when idle).

Then the hostile round (`--no-hostile` skips it): uploads and requests as an attacker would send them (a 100 KB PNG
that unpacks to 512 x 200,000 pixels, a chunked body past the limit, a deeply nested request, NaN, a burst of
requests whose clients give up at once) and the largest inputs the server accepts (a 60 s image, 60 s of stereo
audio). The bars: every hostile case answered with its 4xx, the largest accepted ones with 200, a normal request
answered right after (within one job's time), and the server's peak RSS under 2.5 GB.
"""

import argparse
import concurrent.futures
import io
import json
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import soundfile
from common import machine_header
from PIL import Image

MAX_REQUESTS, MAX_CLIENTS = 500, 32
MAX_PEAK_RSS_MB = 2500
ABANDONED = 6  # requests in the burst whose clients give up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


UPLOAD_SECONDS = 59.9
UPLOAD_BPM = 120  # the uploads are noise, with no beat to track: a beat-time model is told their tempo


def upload_mix(url: str, steps: int) -> dict[str, int]:
    """8 generates, 2 audio-to-image and 2 remix uploads of 59.9 s at once: status counts."""
    audio = wav_bytes(UPLOAD_SECONDS)

    def send(n: int) -> int:
        with httpx.Client(base_url=url, timeout=1800) as client:
            if n < 8:
                return client.post("/api/generate", json={"prompt": "upload mix", "seed": n, "steps": steps})\
                    .status_code
            if n < 10:
                return client.post("/api/audio-to-image", files={"file": ("long.wav", audio)},
                                   data={"bpm": UPLOAD_BPM}).status_code
            return client.post("/api/remix", files={"file": ("long.wav", audio)},
                               data={"prompt": "remix", "steps": steps, "bpm": UPLOAD_BPM}).status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        return dict(Counter(str(status) for status in pool.map(send, range(12))))


def request_for(n: int, steps: int) -> tuple[str, dict]:
    """Every other request is Riffusion's; seeds and prompts vary so that no two are the same job."""
    prompts = ("jazzy saxophone", "electronic beats", "church bells", "funky piano")
    if n % 2:
        return "/run_inference/", {
            "alpha": (n % 5) / 4, "num_inference_steps": steps, "seed_image_id": "og_beat",
            "start": {"prompt": prompts[n % 4], "seed": n, "denoising": 0.75, "guidance": 7.0},
            "end": {"prompt": prompts[(n + 1) % 4], "seed": n + 1, "denoising": 0.75, "guidance": 7.0}}
    return "/api/generate", {"prompt": prompts[n % 4], "seed": n, "steps": steps}


def png_bytes(width: int, height: int = 512) -> bytes:
    """A flat grey PNG: a few hundred bytes per million pixels."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 200).save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(seconds: float, channels: int = 2, rate: int = 44100) -> bytes:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, (int(seconds * rate), channels)).astype(np.float32)
    soundfile.write(buffer, noise, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def chunked_upload(mebibytes: int) -> Iterator[bytes]:
    """A multipart upload sent in chunks (so with no Content-Length)."""
    yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    for _ in range(mebibytes):
        yield b"\0" * 2**20
    yield b"\r\n--x--\r\n"


def hostile_round(url: str, steps: int) -> list[dict]:
    """The hostile cases and the largest accepted inputs: [{case, status, expected, seconds, ok}]."""
    cases = []

    def record(case: str, expected: int, send) -> None:
        start = time.monotonic()
        status = send()
        cases.append({"case": case, "status": status, "expected": expected,
                      "seconds": round(time.monotonic() - start, 2), "ok": status == expected})

    with httpx.Client(base_url=url, timeout=600) as client:
        def upload(path: str, name: str, data: bytes, **form) -> int:
            return client.post(path, files={"file": (name, data)}, data=form).status_code

        record("PNG 512 x 200,000 (a 100 KB file) to image-to-audio", 400,
               lambda: upload("/api/image-to-audio", "wide.png", png_bytes(200_000)))
        record("PNG 512 x 6001 (60 s, the largest accepted) to image-to-audio", 200,
               lambda: upload("/api/image-to-audio", "long.png", png_bytes(6001)))
        record("61 s of audio (refused from its header) to remix", 400,
               lambda: upload("/api/remix", "long.wav", wav_bytes(61, channels=1, rate=8000), prompt="x"))
        record("60 s of 44.1 kHz stereo (the largest accepted) to audio-to-image", 200,
               lambda: upload("/api/audio-to-image", "long.wav", wav_bytes(60), bpm=UPLOAD_BPM))
        record("a chunked upload of 40 MiB without Content-Length", 413,
               lambda: client.post("/api/remix", content=chunked_upload(40),
                                   headers={"content-type": "multipart/form-data; boundary=x"}).status_code)
        record("a request nested 10,000 deep", 400,
               lambda: client.post("/api/compose", content=b'{"keyframes": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
                                   headers={"content-type": "application/json"}).status_code)
        record("NaN guidance", 422, lambda: client.post("/api/generate", content=b'{"prompt": "x", "guidance": NaN}',
                                                        headers={"content-type": "application/json"}).status_code)

    def give_up(n: int) -> None:
        try:
            httpx.post(f"{url}/api/generate", json={"prompt": "abandoned", "seed": n, "steps": steps, "seconds": 60},
                       timeout=0.5)
        except httpx.TimeoutException:
            pass

    with concurrent.futures.ThreadPoolExecutor(ABANDONED) as pool:
        list(pool.map(give_up, range(ABANDONED)))
    time.sleep(1)
    with httpx.Client(base_url=url, timeout=600) as client:
        record(f"a normal request right after {ABANDONED} abandoned 60 s ones", 200,
               lambda: client.post("/api/generate", json={"prompt": "after", "steps": steps}).status_code)
    return cases


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per request")
    parser.add_argument("--model", default="mini")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--hostile", action=argparse.BooleanOptionalAction, default=True,
                        help="then send the hostile round")
    parser.add_argument("--uploads", action=argparse.BooleanOptionalAction, default=True,
                        help="then send the upload mix")
    args = parser.parse_args()
    if not (1 <= args.requests <= MAX_REQUESTS and 1 <= args.clients <= MAX_CLIENTS):
        sys.exit(f"--requests must be 1-{MAX_REQUESTS} and --clients 1-{MAX_CLIENTS}")
    print(machine_header())
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "spectrodiff.cli", "serve", "--model", args.model, "--host",
                               "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        began = time.monotonic()
        while True:
            try:
                httpx.get(f"{url}/api/info", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() - began > 120:
                    sys.exit(f"the server did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.25)
        startup = time.monotonic() - began

        def send(n: int) -> tuple[int, float]:
            path, body = request_for(n, args.steps)
            start = time.monotonic()
            with httpx.Client(timeout=600) as client:
                status = client.post(url + path, json=body).status_code
            return status, time.monotonic() - start

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(send, range(args.requests)))
        wall = time.monotonic() - began
        uploads = {}
        if args.uploads:
            uploads["status"] = upload_mix(url, args.steps)
            uploads["peak_rss_mb"] = round(rss_mb(server.pid), 1)
            time.sleep(5)
            uploads["idle_rss_mb"] = round(rss_mb(server.pid, "VmRSS"), 1)
        hostile = hostile_round(url, args.steps) if args.hostile else []
        rss = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)

    latencies = [seconds for _, seconds in results]
    status = Counter(str(code) for code, _ in results)
    errors = sum(n for code, n in status.items() if code.startswith("5"))
    report = {"requests": args.requests, "clients": args.clients, "steps": args.steps, "model": args.model,
              "status": dict(status), "errors_5xx": errors, "startup_s": round(startup, 2), "wall_s": round(wall, 2),
              "requests_per_minute": round(60 * args.requests / wall, 2),
              "latency_s": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                            "p95": percentile(latencies, 95), "p99": percentile(latencies, 99),
                            "max": max(latencies), "mean": statistics.fmean(latencies)},
              "peak_rss_mb": round(rss, 1), "uploads": uploads, "hostile": hostile}
    report["latency_s"] = {k: round(v, 2) for k, v in report["latency_s"].items()}
    print(f"{args.requests} requests from {args.clients} clients, {args.steps} steps each, model {args.model}: "
          f"status {dict(status)} ({errors} 5xx: {'PASS' if errors == 0 else 'FAIL'})")
    lat = report["latency_s"]
    print(f"latency s: p50 {lat['p50']}  p90 {lat['p90']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"wall {report['wall_s']} s ({report['requests_per_minute']} requests/min), server start "
          f"{report['startup_s']} s, server peak RSS {report['peak_rss_mb']} MB")
    if uploads:
        print(f"upload mix (8 generates, 2 audio-to-image, 2 remixes of {UPLOAD_SECONDS} s): status "
              f"{uploads['status']}, peak RSS {uploads['peak_rss_mb']} MB, idle after {uploads['idle_rss_mb']} MB")
    for case in hostile:
        print(f"hostile: {case['case']}: {case['status']} in {case['seconds']} s (expected {case['expected']}: "
              f"{'PASS' if case['ok'] else 'FAIL'})")
    memory_ok = rss < MAX_PEAK_RSS_MB
    print(f"server peak RSS {report['peak_rss_mb']} MB (target < {MAX_PEAK_RSS_MB} MB: "
          f"{'PASS' if memory_ok else 'FAIL'})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    uploads_ok = not uploads or uploads["status"] == {"200": 12}
    sys.exit(1 if errors or not memory_ok or not uploads_ok or not all(case["ok"] for case in hostile) else 0)


if __name__ == "__main__":
    main()
