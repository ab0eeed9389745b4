"""`spectrodiff serve`: the studio web page (Gradio, `studio`) and the JSON HTTP API with Riffusion's
`/run_inference/` (`api`), over one loaded model behind a queue (`service`), served by uvicorn (`server`); needs
the `serve` extra."""

import os
import tempfile

# Gradio keeps uploads and the files it serves under GRADIO_TEMP_DIR, read when gradio is imported: a private
# folder for this process (removed when `serve` stops) rather than a shared /tmp/gradio that outlives it.
GRADIO_CACHE = os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="spectrodiff-gradio-"))

from .server import check_address, create_app, serve  # noqa: E402  (gradio must see GRADIO_TEMP_DIR)
from .service import Studio  # noqa: E402

__all__ = ["GRADIO_CACHE", "Studio", "check_address", "create_app", "serve"]
