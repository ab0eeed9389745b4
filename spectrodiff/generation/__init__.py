"""Generation: the diffusers pipeline (`pipeline`), its spectrogram and vocoder components (`components`), each
mode's settings declared once (`jobs`), the timeline of keyframes (`timeline`), compose plans and batch lines
(`plans`, `batch`), the modes (`modes`) and the output triple of audio, spectrogram PNG and JSON sidecar they write
(`output`, its paths in `paths`).

Builds on `spectrodiff.codec` and `spectrodiff.vocoding`; never imports training or the web studio.
"""
