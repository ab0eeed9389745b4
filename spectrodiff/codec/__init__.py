"""Audio <-> spectrogram image without a model: the spectrogram parameters (`params`), audio files (`audio`), the
mel transform (`mel`) and its pitch shift (`pitch`), the pixel codec and PNG EXIF (`image`), and whole files to
images (`convert`).

Imports torch, numpy, Pillow, soundfile and soxr only: never diffusers, transformers or peft.
"""
