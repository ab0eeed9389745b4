"""One ASGI app: the JSON API (with OpenAPI docs) and the Gradio studio page mounted at the root."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import socket

import gradio as gr
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .. import __version__
from ..errors import SpectrodiffError
from .api import api_router, install_error_handlers
from .guards import BodyLimit, NoCrossOrigin
from .service import MAX_UPLOAD_BYTES, MAX_WAITING, Studio
from .studio import THEME, build_studio

LOG = logging.getLogger("spectrodiff.serve")
# glibc's mallopt option for the number of heap arenas. Each request thread otherwise gets an arena of its own that
# keeps its freed tile buffers: the load test's peak RSS was 2.18 GB with the default and 1.51 GB with two arenas.
M_ARENA_MAX, SERVER_ARENAS = -8, 2


def limit_malloc_arenas() -> None:
    """Cap glibc's heap arenas (a no-op where the C library is not glibc)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, SERVER_ARENAS)
    except (OSError, AttributeError):
        pass


def create_app(studio: Studio, allow_origins: tuple[str, ...] = ()) -> FastAPI:
    """The server's app over `studio`. `allow_origins`: web origins (e.g. Riffusion's app at
    http://localhost:3000) whose pages may call the API from a browser; none by default."""

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


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 7860, allow_origins: tuple[str, ...] = (),
          log_level: str = "warning") -> None:
    """Run the server until interrupted (uvicorn)."""
    import uvicorn

    limit_malloc_arenas()
    if not is_loopback(host):
        LOG.warning("serving on %s: anyone who can reach this machine can use the studio", host)
    app = create_app(studio, allow_origins)
    print(f"spectrodiff studio on http://{host}:{port}/  (API docs at /docs)", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        studio.close()


