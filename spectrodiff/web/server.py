"""One ASGI app: the JSON API (with OpenAPI docs) and the Gradio studio page mounted at the root."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from dataclasses import dataclass

import gradio as gr
import h11
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import __version__
from ..errors import SpectrodiffError
from .api import api_router, install_error_handlers
from .guards import AccessLog, BodyLimit, NoCrossOrigin
from .service import MAX_UPLOAD_BYTES, MAX_WAITING, Studio
from .studio import THEME, build_studio

LOG = logging.getLogger("spectrodiff.serve")


def create_app(studio: Studio, allow_origins: tuple[str, ...] = (), access_log: bool = False) -> FastAPI:
    """The server's app over `studio`. `allow_origins`: web origins (e.g. Riffusion's app at
    http://localhost:3000) whose pages may call the API from a browser; none by default. `access_log`: one line per
    request on stderr, with its time."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        studio.close()  # uploads and results go with the server

    app = FastAPI(title="spectrodiff", version=__version__, lifespan=lifespan,
                  description="Text to music through spectrograms: the studio's API and Riffusion's "
                              "`/run_inference/`. Results live until the server stops.")
    # A body may hold one upload and its form fields; whoever sends more is refused before it is all read.
    app.add_middleware(BodyLimit, limit=MAX_UPLOAD_BYTES + 2**20, message="the request is larger than allowed: "
                       f"uploads of at most {MAX_UPLOAD_BYTES // 2**20} MiB")
    if allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(allow_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    else:
        app.add_middleware(NoCrossOrigin)
    if access_log:
        app.add_middleware(AccessLog, write=lambda line: print(line, file=sys.stderr, flush=True))
    install_error_handlers(app)
    app.include_router(api_router(studio))
    page = build_studio(studio).queue(default_concurrency_limit=1, max_size=MAX_WAITING)
    return gr.mount_gradio_app(app, page, path="/", max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False,
                               footer_links=["api"], theme=THEME)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_address(host: str, port: int) -> None:
    """SpectrodiffError, before any model is loaded, when (host, port) cannot be listened on (in use, not ours)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise SpectrodiffError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or "
                               "--host") from None


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold: a request's headers must arrive within `header_seconds` (of the connection, or of
    the last answer on a kept-alive one) and its body within `body_seconds` of its headers (25 MiB at 0.4 MB/s), else
    408 and the connection closes; an idle kept-alive connection closes after `keep_alive_seconds`; past
    `connections` open at once a new one gets 503 and is closed (far below the usual limit of 1024 open files)."""

    header_seconds: float = 10.0
    body_seconds: float = 60.0
    keep_alive_seconds: float = 5.0
    connections: int = 200


def _raw_answer(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for a request that never reached the app."""
    body = f'{{"detail": "{detail}"}}'.encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with deadlines for slow clients and a cap on open connections (uvicorn has neither: a
    client that sends half its headers held its connection, and its file descriptor, for ever)."""

    limits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) >= self.limits.connections:
            self.transport = transport
            transport.write(_raw_answer(503, "Service Unavailable", "too many connections; try again shortly"))
            transport.close()
            return
        super().connection_made(transport)
        self._arm(self.limits.header_seconds)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:  # the next request on a kept-alive one
            self._arm(self.limits.header_seconds)
        headers_pending = self.conn.their_state is h11.IDLE
        super().data_received(data)
        if headers_pending and self.conn.their_state is h11.SEND_BODY:
            self._arm(self.limits.body_seconds)
        elif self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # the whole request has arrived
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        """408 (unless an answer has begun) and close: the app, if it was reading the body, sees the client leave."""
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_raw_answer(408, "Request Timeout", "the request did not arrive in time"))
        self.transport.close()


class StoppingServer(uvicorn.Server):
    """uvicorn's server that, told to exit (SIGTERM, Ctrl-C), first stops the studio's running job at its next step,
    so that it does not wait for the job to finish."""

    def __init__(self, config: uvicorn.Config, studio: Studio):
        super().__init__(config)
        self.studio = studio

    def handle_exit(self, sig: int, frame) -> None:
        self.studio.stop()
        super().handle_exit(sig, frame)


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 7860, allow_origins: tuple[str, ...] = (),
          log_level: str = "warning", access_log: bool = False, limits: ConnectionLimits = ConnectionLimits()
          ) -> None:
    """Run the server until interrupted (uvicorn)."""
    if not is_loopback(host):
        LOG.warning("serving on %s: anyone who can reach this machine can use the studio", host)
    app = create_app(studio, allow_origins, access_log)
    protocol = type("GuardedH11", (GuardedH11,), {"limits": limits})
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol, access_log=False,
                            timeout_keep_alive=limits.keep_alive_seconds)
    print(f"spectrodiff studio on http://{host}:{port}/  (API docs at /docs)", flush=True)
    try:
        StoppingServer(config, studio).run()
    finally:
        studio.close()


