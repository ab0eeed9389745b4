"""Generation: the diffusers pipeline (`pipeline`), its spectrogram and vocoder components (`components`), the
timeline of keyframes (`timeline`), compose plans and batch jobs (`plans`, `batch`), and the modes that write the
output triple of audio, spectrogram PNG and JSON sidecar (`modes`).

Builds on `spectrodiff.codec` and `spectrodiff.vocoding`; never imports training or the web studio.
"""
