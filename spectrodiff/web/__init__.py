"""`spectrodiff serve`: the studio web page (Gradio, `studio`) and the JSON HTTP API with Riffusion's
`/run_inference/` (`api`), over one loaded model behind a queue (`service`), served by uvicorn (`server`); needs
the `serve` extra."""

import atexit
import os
import shutil
import tempfile

# Gradio keeps uploads and the files it serves under GRADIO_TEMP_DIR, read when gradio is imported: a private
# folder for this process, removed when it exits however `serve` ends (stopped, SIGTERM, a port in use), rather
# than a shared /tmp/gradio that outlives it. An operator's own GRADIO_TEMP_DIR is left alone.
if "GRADIO_TEMP_DIR" not in os.environ:
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="spectrodiff-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)
GRADIO_CACHE = os.environ["GRADIO_TEMP_DIR"]

from .server import check_address, create_app, serve  # noqa: E402  (gradio must see GRADIO_TEMP_DIR)
from .service import Studio  # noqa: E402

__all__ = ["GRADIO_CACHE", "Studio", "check_address", "create_app", "serve"]
