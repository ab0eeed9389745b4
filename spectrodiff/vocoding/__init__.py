"""Mel -> audio: the STFT pair the loops iterate on (`stft`), Griffin-Lim (`griffin_lim`), least squares and
streaming reconstruction (`reconstruct`), mel-consistency refinement (`refine`), the neural vocoder (`vocoder`),
the bundled vocoders and the default choice (`registry`), and images to audio (`render`).

Builds on `spectrodiff.codec`; never imports diffusers, so `image-to-audio` starts in a second.
"""
