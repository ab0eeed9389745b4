"""Load test of `spectrodiff serve`: a server on loopback, N requests from C concurrent clients.

    python benchmarks/load.py [--requests 50] [--clients 8] [--steps 25] [--model mini] [--json OUT]

Starts `spectrodiff serve` on 127.0.0.1 (never another address) at a free port, sends a mix of
`POST /api/generate` (5.12 s loops) and Riffusion's `POST /run_inference/` from the clients, each waiting for its
answer before sending the next, and reports status counts (the bar: no 5xx), latency percentiles, throughput and
the server's peak resident memory (VmHWM). At most 500 requests and 32 clients.
"""

import argparse
import concurrent.futures
import json
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from common import machine_header

MAX_REQUESTS, MAX_CLIENTS = 500, 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_for(n: int, steps: int) -> tuple[str, dict]:
    """Every other request is Riffusion's; seeds and prompts vary so that no two are the same job."""
    prompts = ("jazzy saxophone", "electronic beats", "church bells", "funky piano")
    if n % 2:
        return "/run_inference/", {
            "alpha": (n % 5) / 4, "num_inference_steps": steps, "seed_image_id": "og_beat",
            "start": {"prompt": prompts[n % 4], "seed": n, "denoising": 0.75, "guidance": 7.0},
            "end": {"prompt": prompts[(n + 1) % 4], "seed": n + 1, "denoising": 0.75, "guidance": 7.0}}
    return "/api/generate", {"prompt": prompts[n % 4], "seed": n, "steps": steps}


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
        rss = peak_rss_mb(server.pid)
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
              "peak_rss_mb": round(rss, 1)}
    report["latency_s"] = {k: round(v, 2) for k, v in report["latency_s"].items()}
    print(f"{args.requests} requests from {args.clients} clients, {args.steps} steps each, model {args.model}: "
          f"status {dict(status)} ({errors} 5xx: {'PASS' if errors == 0 else 'FAIL'})")
    lat = report["latency_s"]
    print(f"latency s: p50 {lat['p50']}  p90 {lat['p90']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"wall {report['wall_s']} s ({report['requests_per_minute']} requests/min), server start "
          f"{report['startup_s']} s, server peak RSS {report['peak_rss_mb']} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
