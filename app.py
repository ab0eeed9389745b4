"""Hugging Face Spaces entry point (a Gradio Space runs `python app.py`): the spectrodiff studio and API.

Spaces route outside traffic to port 7860 inside the container, so this binds 0.0.0.0 there; locally, prefer
`spectrodiff serve`, which binds 127.0.0.1. SPECTRODIFF_MODEL picks the model (default: the bundled `mini`).
"""

import os

from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.web import Studio, serve

if __name__ == "__main__":
    pipe = SpectrodiffPipeline.load(os.environ.get("SPECTRODIFF_MODEL", "mini"))
    pipe.set_progress_bar_config(disable=True)
    studio = Studio(pipe)
    serve(studio, host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), port=int(os.environ.get("PORT", "7860")))
