"""SpectrodiffPipeline: Stable Diffusion on spectrogram images, on a time axis of any length.

Used as any diffusers pipeline:

    pipe = SpectrodiffPipeline.from_pretrained("riffusion/riffusion-model-v1")   # or a folder, or load("mini")
    audio = pipe("jazzy saxophone", num_inference_steps=25, guidance_scale=7.0, seconds=10.0).audios[0]

One latent covers the whole clip. Each step denoises overlapping tile-wide windows of it (MultiDiffusion) and
averages their predictions, so neighbouring tiles share latent context and no join is ever generated alone.
Loops wrap the windows around the end, or, for a single tile, make every convolution circular in time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils import BaseOutput
from PIL import Image
from safetensors import SafetensorError, safe_open
from transformers import CLIPTextModel

from ..bundled import resolve_model
from ..codec.image import magnitudes
from ..codec.params import SpectrogramParams
from ..errors import SpectrodiffError
from .components import SpectrogramComponent, VocoderComponent
from .conditions import Music, MusicTable, music_features, takes_music, words_music
from .harmony import (
    BEAT_TILE_BEATS,
    ChordLayout,
    aligned_conditions,
    chord_layout,
    fit_chords,
    key_of_chords,
    parse_chords,
    without_chords,
)
from .jobs import MAX_SEED, SCHEDULER_NAMES, TILE_SECONDS, GenerateJob
from .modes import generate, tempo_of
from .musical import beats_per_bar
from .timeline import Timeline

SCHEDULERS = dict(zip(SCHEDULER_NAMES, (DPMSolverMultistepScheduler, DDIMScheduler, DDPMScheduler,
                                        EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, LMSDiscreteScheduler,
                                        PNDMScheduler, UniPCMultistepScheduler), strict=True))
REQUIRED_COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
# Prompts are padded to this many tokens: CLIP's length, and plenty for music prompts with longer encoders (BERT
# takes 512; padding that far would only slow cross-attention down).
MAX_TEXT_TOKENS = 77
LORA_FILE = "lora.safetensors"  # what `spectrodiff train --lora-rank` writes into its output folder
# Latent columns of context on each side of a window when decoding or encoding piecewise.
VAE_CONTEXT_COLUMNS = 8
# Adam's step on unit-variance latents when refining an encoding: a few steps move them by a small fraction of their
# spread (docs/benchmarks.md).
ENCODE_REFINE_LR = 0.03


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of noise, column by column.

    Args:
        a, b: `(C, H, W)` noise; alpha: `(W,)` weights towards b.
    """
    dot = (a * b).sum(dim=(0, 1)) / (a.norm(dim=(0, 1)) * b.norm(dim=(0, 1)) + 1e-8)
    theta = torch.arccos(dot.clamp(-1 + 1e-7, 1 - 1e-7))
    near = dot.abs() > 0.9995  # nearly parallel: lerp avoids dividing by sin(theta) ~ 0
    sin = torch.sin(theta)
    wa = torch.where(near, 1 - alpha, torch.sin((1 - alpha) * theta) / sin)
    wb = torch.where(near, alpha, torch.sin(alpha * theta) / sin)
    return a * wa + b * wb


def _circular_conv_forward(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    pad_h, pad_w = conv.padding
    x = F.pad(F.pad(x, (pad_w, pad_w, 0, 0), mode="circular"), (0, 0, pad_h, pad_h))
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


@contextlib.contextmanager
def circular_time_axis(*modules: torch.nn.Module) -> Iterator[None]:
    """Make every padded Conv2d in `modules` wrap around along width (time), zero-padded along height."""
    patched = [m for module in modules for m in module.modules()
               if isinstance(m, torch.nn.Conv2d) and isinstance(m.padding, tuple) and m.padding[1] > 0]
    for conv in patched:
        conv.forward = lambda x, conv=conv: _circular_conv_forward(conv, x)
    try:
        yield
    finally:
        for conv in patched:
            del conv.forward


def window_starts(width: int, window: int, loop: bool) -> list[int]:
    """Start columns of overlapping windows covering `width` columns (a quarter-window overlap).

    Non-loop windows stay inside [0, width); loop windows are evenly spaced and may wrap past the end.
    """
    if width <= window:
        return [0]
    stride = window - window // 4
    if loop:
        count = math.ceil(width / stride)
        return [round(i * width / count) for i in range(count)]
    count = math.ceil((width - window) / stride) + 1
    return [round(i * (width - window) / (count - 1)) for i in range(count)]


def _window_weights(window: int, device: torch.device) -> torch.Tensor:
    """`(window,)` weights ramping up over each quarter edge, so overlaps blend smoothly."""
    ramp = max(window // 4, 1)
    x = torch.arange(window, device=device, dtype=torch.float32)
    return torch.minimum(torch.ones_like(x), torch.minimum(x + 1, window - x) / (ramp + 1))


def _columns(start: int, window: int, width: int) -> torch.Tensor:
    return torch.arange(start, start + window) % width


def magnitude_convergence(recon: torch.Tensor, pixels: torch.Tensor, power: float) -> torch.Tensor:
    """Spectral convergence ||S - S'|| / ||S|| of the magnitudes that `(B, 3, H, W)` pixels in [-1, 1] (the VAE's
    range) stand for, on every channel (`spectrodiff.codec.image.magnitudes`): the loss of an encoding's refinement
    (`SpectrodiffPipeline.refine_latents`) and of the VAE's training, as pixel MSE underweights the loud parts, which
    dominate what one hears.

    Returns:
        a scalar tensor.
    """
    target = magnitudes((pixels + 1) / 2, power)
    return torch.linalg.vector_norm(magnitudes((recon + 1) / 2, power) - target) / \
        torch.linalg.vector_norm(target).clamp_min(1e-6)


@dataclass
class Windows:
    """The tile-wide windows that a latent `width` columns wide is denoised in, and what conditions each (N rows).

    Args:
        starts: each window's first column (`window_starts`); a loop's may wrap past the end.
        width: the latent's columns.
        tile: the columns a window spans.
        weights: `(tile,)` each column's weight where windows overlap (`_window_weights`).
        cond, uncond: `(N, L, D)` text states of the keyframes blended at each window's centre, and of their negative
            prompts.
        guidance: `(N,)` each window's guidance scale.
        music: `(N, MUSIC_FEATURES)` musical conditions, or None for a UNet that takes none.
        aligned: `(channels, rows, width)` conditions aligned with the latent's columns (and rows, or one row for
            all) (`harmony.aligned_conditions`), or None for a UNet that takes none.
    """

    starts: list[int]
    width: int
    tile: int
    weights: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    guidance: torch.Tensor
    music: torch.Tensor | None
    aligned: torch.Tensor | None = None


@dataclass
class SpectrodiffPipelineOutput(BaseOutput):
    """What `SpectrodiffPipeline.__call__` returns.

    Args:
        audios: `(batch, channels, samples)` float audio in [-1, 1] at `sample_rate`, the samples `spectrodiff
            generate` writes (before 16-bit rounding), at Riffusion's loudness (-12 dBFS RMS); numpy, or torch with
            `output_type="pt"`. Clips of different lengths (tempos picked per prompt) are padded with silence to
            the longest.
        images: the spectrograms, one RGB PIL image each, their parameters in EXIF (save them as PNG).
        sample_rate: the audio's rate in Hz (the model's spectrogram parameters').
        music: the tempo and key each clip followed (None: none), as a sidecar's "music" records them.
        seconds: each clip's own length.
    """

    audios: np.ndarray | torch.Tensor
    images: list[Image.Image]
    sample_rate: int
    music: list[Music | None] | None = None
    seconds: list[float] | None = None


class SpectrodiffPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Text (and optionally audio) to spectrogram images and audio, any length, seamless.

    Components: `vae` (AutoencoderKL), `text_encoder` (CLIPTextModel or any transformers encoder),
    `tokenizer`, `unet` (UNet2DConditionModel), `scheduler`, `spectrogram` (SpectrogramComponent: the spectrogram
    parameters of the training data; Riffusion's when a folder has none, as its public checkpoint has not), and
    optionally `vocoder` (VocoderComponent for those parameters: the model's own, before the bundled one for its
    parameters and Griffin-Lim).
    Config (model_index.json): `encode_steps`, the steps refining an encoding of input audio (`refine_latents`)
    that the model recommends, 0 by default (each is a decoder pass forward and back: cheap for a small VAE, slow
    for Stable Diffusion's, docs/benchmarks.md); `music_styles`, for a model trained with musical
    conditions (`conditions.py`), the styles it knows with their tempo ranges and modes, from which it picks a
    tempo and key for a prompt that names none.
    LoRA adapters load through diffusers' `load_lora_weights` (with `set_adapters`, `fuse_lora` and the rest),
    including the `lora.safetensors` files `spectrodiff train --lora-rank` writes.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["spectrogram", "vocoder"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler,
                 spectrogram: SpectrogramComponent | None = None, vocoder: VocoderComponent | None = None,
                 encode_steps: int = 0, music_styles: dict | None = None, aligned_layout: str = "chroma"):
        super().__init__()
        spectrogram = SpectrogramComponent.of(spectrogram) if spectrogram is not None else SpectrogramComponent()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler, spectrogram=spectrogram, vocoder=vocoder)
        self.register_to_config(encode_steps=encode_steps, music_styles=music_styles, aligned_layout=aligned_layout)
        self._caption_embeddings: tuple[list[str], torch.Tensor] | None = None

    # ---- loading -------------------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model: str,
        allow_pickle: bool = False,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        attention_slicing: bool = False,
        cpu_offload: bool = False,
        lora: Path | None = None,
    ) -> SpectrodiffPipeline:
        """Load a bundled model by short name, a local diffusers folder, or a hub id such as
        `riffusion/riffusion-model-v1` (downloaded by diffusers; needs internet the first time).

        Folders without a `spectrogram/` component (Riffusion's) get Riffusion's parameters. Pickled weights are
        refused unless `allow_pickle`: unpickling can run arbitrary code. `lora` (a file, or a training output
        folder) adds a LoRA adapter to the UNet.
        """
        lora = lora_path(lora) if lora is not None else None  # a bad path stops before the model loads
        path = resolve_model(model)
        if path.is_dir():
            _check_model_folder(path, allow_pickle)
        if dtype is not None and dtype != torch.float32 and not str(device).startswith("cuda"):
            raise SpectrodiffError(f"{dtype} needs a CUDA device; on {device} use float32")
        if cpu_offload and not torch.cuda.is_available():
            raise SpectrodiffError("--cpu-offload needs a CUDA GPU")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*are not expected by.*")
            try:
                # use_safetensors=None: safetensors where present, pickles allowed (only with allow_pickle).
                pipe = cls.from_pretrained(str(path) if path.is_dir() else model,
                                           use_safetensors=None if allow_pickle else True,
                                           dtype=dtype or torch.float32)
            except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
                raise SpectrodiffError(f"cannot load model {model!r} (tried {path}): "
                                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        pipe.model_id = model  # the name the user gave, recorded in sidecars
        if lora is not None:
            check_lora_fits(lora, pipe.spectrogram, model)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pipe.load_lora_weights(str(lora), adapter_name="lora")
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise SpectrodiffError(f"LoRA {lora} does not fit this model: {str(exc).splitlines()[0]}") from None
            pipe.model_id = f"{model}+{lora}"
        if cpu_offload:
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(device)
        if attention_slicing:
            pipe.enable_attention_slicing()
        return pipe

    def set_scheduler(self, name: str) -> None:
        """Swap the scheduler for one of SCHEDULERS, keeping the model's noise schedule."""
        if name not in SCHEDULERS:
            raise SpectrodiffError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
        self.scheduler = SCHEDULERS[name].from_config(self.scheduler.config)

    @property
    def scheduler_name(self) -> str:
        kind = type(self.scheduler)
        return next((name for name, cls in SCHEDULERS.items() if cls is kind), kind.__name__)

    # ---- shapes --------------------------------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_height(self) -> int:
        return self.spectrogram.num_frequencies // self.vae_scale_factor

    @property
    def tile_columns(self) -> int:
        """Latent columns of one tile: Riffusion's (5.12 s: 512 pixels, 64 columns), or in beat time
        `BEAT_TILE_BEATS` beats."""
        params = self.spectrogram
        if params.beat_time:
            return max(1, BEAT_TILE_BEATS * params.columns_per_beat // self.vae_scale_factor)
        return params.tile_width(TILE_SECONDS) // self.vae_scale_factor

    @property
    def seconds_per_column(self) -> float:
        """Seconds a latent column spans (in beat time, at the tempo bound by `at_tempo`)."""
        params = self.spectrogram
        return self.vae_scale_factor * params.hop_length / params.sample_rate

    def column_seconds(self, width: int) -> np.ndarray:
        """Centre time in seconds of each of `width` latent columns."""
        return (np.arange(width) + 0.5) * self.seconds_per_column

    @contextlib.contextmanager
    def at_tempo(self, bpm: float | None) -> Iterator[None]:
        """Within it, a beat-time model's spectrogram parameters are bound to `bpm` (what every mode's columns,
        images and audio then follow); nothing changes for a clock-time model. SpectrodiffError for a beat-time
        model without a tempo, or one outside the tempi it was trained on."""
        params = self.spectrogram
        if not params.beat_time or params.tempo is not None:
            yield
            return
        if bpm is None:
            raise SpectrodiffError("this model's time axis is in beats: it needs a tempo (--bpm, or a style it knows)")
        self.check_tempo(bpm)
        self.spectrogram = SpectrogramComponent.of(params.at_tempo(bpm))
        try:
            yield
        finally:
            self.spectrogram = params

    def check_tempo(self, bpm: float) -> None:
        """SpectrodiffError for a tempo outside those the model was trained on (its styles' range)."""
        table = self.music_table
        if table is not None:
            low, high = table.tempo_range()
            if not low <= bpm <= high:
                raise SpectrodiffError(f"{bpm:g} BPM is outside the tempi this model was trained on ({low:g}-{high:g} "
                                       "BPM): ask within them")

    # ---- text ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_text(self, prompts: list[str], padding: str = "max_length") -> torch.Tensor:
        """`len(prompts)` texts -> `(K, L, D)` hidden states, L the encoder's length (`padding="longest"`: the
        longest prompt's, for embeddings that leave padding out); over-long prompts are truncated with a warning."""
        limit = min(self.tokenizer.model_max_length, MAX_TEXT_TOKENS,
                    getattr(self.text_encoder.config, "max_position_embeddings", MAX_TEXT_TOKENS))
        for prompt in prompts:
            length = len(self.tokenizer(prompt).input_ids)
            if length > limit:
                warnings.warn(f"prompt is {length} tokens, the text encoder takes {limit}: truncated "
                              f"({prompt[:40]!r}...)", stacklevel=2)
        tokens = self.tokenizer(prompts, padding=padding, max_length=limit, truncation=True,
                                return_tensors="pt").to(self.text_encoder.device)
        # CLIP (Stable Diffusion) was trained without an attention mask; other encoders need theirs.
        mask = None if isinstance(self.text_encoder, CLIPTextModel) else tokens.attention_mask
        return self.text_encoder(tokens.input_ids, attention_mask=mask)[0].to(self.unet.dtype)

    @torch.no_grad()
    def sentence_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """`(K, D)` unit-length mean of each prompt's token states (padding left out, and not computed: mini's 174
        style captions padded to 77 tokens took 3.2 s of a cold `generate`)."""
        hidden = self.encode_text(prompts, padding="longest").float()
        limit = hidden.shape[1]
        mask = self.tokenizer(prompts, padding="max_length", max_length=limit, truncation=True,
                              return_tensors="pt").attention_mask.to(hidden.device, hidden.dtype)[..., None]
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    # ---- music ---------------------------------------------------------------------------------------------------

    @property
    def music_conditioned(self) -> bool:
        """Whether the UNet takes musical conditions (`conditions.music_features`) beside the text."""
        return takes_music(self.unet)

    @property
    def aligned_channels(self) -> int:
        """Channels of conditions aligned with the columns (`harmony.aligned_conditions`) the UNet takes beside its
        latents: 0, or its `chord_layout`'s channels."""
        return self.unet.config.in_channels - self.vae.config.latent_channels

    @property
    def chord_layout(self) -> ChordLayout:
        """How the aligned conditions carry the chord (the config's `aligned_layout`; mini v3's is "chroma")."""
        return chord_layout(self.config.aligned_layout, self.spectrogram, self.vae_scale_factor)

    @property
    def music_table(self) -> MusicTable | None:
        """The styles the model knows (its config's `music_styles`), or None."""
        styles = self.config.get("music_styles")
        return MusicTable.from_dict({"styles": styles}) if styles else None

    def style_of(self, prompt: str) -> str | None:
        """The style of the model's `music_styles` whose name or captions the prompt is nearest (cosine similarity of
        sentence embeddings); None for a model without the table."""
        table = self.music_table
        if table is None:
            return None
        if self._caption_embeddings is None:
            # The name too: "a cinematic string orchestra" is a string-ensemble caption.
            captions = [(name, text) for name, entry in table.styles.items() for text in (name, *entry["captions"])]
            texts = [caption for _, caption in captions]
            # A few at a time: every text is padded to the encoder's full length, and all of mini's captions at
            # once took several times a cold `generate`'s peak memory (docs/benchmarks.md).
            embeddings = torch.cat([self.sentence_embeddings(texts[i: i + 8]) for i in range(0, len(texts), 8)])
            self._caption_embeddings = ([name for name, _ in captions], embeddings)
        names, embeddings = self._caption_embeddings
        query = self.sentence_embeddings([prompt])[0]
        similarity = (embeddings.to(query.device) @ query).tolist()
        return names[int(np.argmax(similarity))]

    def resolve_music(self, prompt: str, seed: int, bpm: float | None = None, key: str | None = None,
                      meter: str | None = None) -> Music | None:
        """The tempo and key a generation follows: as asked, else as the prompt words them, else the model's pick
        for the prompt's style (a typical tempo; a key drawn by the seed). None when nothing is known, and for a
        model without musical conditions unless the job asks for a tempo or key."""
        if not self.music_conditioned and bpm is None and key is None:
            return None  # nothing asked, and the model would not follow words or a pick
        said_bpm, said_key = words_music(prompt)
        sources = ["asked" if bpm is not None else "words" if said_bpm is not None else None,
                   "asked" if key is not None else "words" if said_key is not None else None]
        bpm, key = bpm if bpm is not None else said_bpm, key if key is not None else said_key
        style = self.style_of(prompt) if self.music_conditioned and (bpm is None or key is None) else None
        if style is not None:
            picked = self.music_table.pick(style, seed)
            sources = [source or "model" for source in sources]
            bpm, key, meter = bpm or picked.bpm, key or picked.key, meter or picked.meter
        if bpm is None and key is None:
            return None
        return Music(bpm, key, meter or "4/4", *sources)

    def music_labels(self, music: Music | None, starts: list[int]) -> torch.Tensor:
        """`(len(starts), MUSIC_FEATURES)` conditions of latent windows starting at columns `starts`, the bar
        phase counted from column 0, a downbeat. A model with aligned conditions hears its key from the chords."""
        column = self.seconds_per_column
        if music is not None and self.aligned_channels:
            music = dataclasses.replace(music, key=None)
        rows = []
        for start in starts:
            phase = 0.0
            if music is not None and music.bpm is not None:
                phase = start * column * music.bpm / 60 / beats_per_bar(music.meter) % 1.0
            rows.append(music_features(music, phase))
        return torch.from_numpy(np.stack(rows)).to(self._execution_device, self.unet.dtype)

    def with_chords(self, music: Music | None, chords: str | None, bars: int | None, style: str | None,
                    seed: int) -> Music | None:
        """`music` with the chord of each of its `bars` bars, for a model with aligned conditions: the asked
        `chords` (repeated to fill the bars; they imply the key unless one was asked), else a progression typical of
        the style in the music's key. SpectrodiffError for chords a model cannot follow or that do not fit."""
        if not self.aligned_channels:
            if chords is not None:
                raise SpectrodiffError("this model does not take chords: --chords needs a model trained with them "
                                       "(mini version 3 or later)")
            return music
        if music is None or music.bpm is None:
            return music
        if chords is not None:
            fitted = fit_chords(parse_chords(chords), bars or len(parse_chords(chords)))
            key = music.key if music.key_source == "asked" else key_of_chords(fitted)
            return dataclasses.replace(music, key=key, key_source=music.key_source if key == music.key else "chords",
                                       chords=tuple(fitted), chords_source="asked")
        table = self.music_table
        progression = None
        if table is not None and music.key is not None:
            progression = table.progression(style or self.style_of_music(music), music.key, seed)
        return music if progression is None else dataclasses.replace(music, chords=tuple(progression),
                                                                     chords_source="model")

    def style_of_music(self, music: Music) -> str:
        """The first style of the model's table whose tempo range holds the music's tempo (else the first)."""
        styles = self.music_table.styles
        return next((name for name, entry in styles.items() if entry["tempo"][0] <= music.bpm <= entry["tempo"][1]),
                    next(iter(styles)))

    def aligned_rows(self, music: Music | None, width: int) -> torch.Tensor | None:
        """`(channels, rows, width)` aligned conditions of a latent from a downbeat (`harmony.aligned_conditions`), or
        None for a UNet that takes none."""
        if not self.aligned_channels:
            return None
        params = self.spectrogram
        if not params.beat_time:
            raise SpectrodiffError("aligned conditions need a beat-time model (columns_per_beat)")
        meter = music.meter if music is not None else "4/4"
        rows = aligned_conditions(None if music is None else music.chords, meter, params.columns_per_beat, width,
                                  self.vae_scale_factor, layout=self.chord_layout)
        return rows.to(self._execution_device, self.unet.dtype)

    # ---- latents <-> images ------------------------------------------------------------------------------------

    def _piecewise(self, tensor: torch.Tensor, width: int, loop: bool,
                   transform: Callable[[torch.Tensor], torch.Tensor], in_scale: int,
                   out_scale: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Apply `transform` to tile-wide pieces of `tensor` (`width` latent columns, `in_scale` samples each) with
        context on both sides, yielding (first latent column, the piece's centre output, `out_scale` per column)."""
        tile, ctx = self.tile_columns, VAE_CONTEXT_COLUMNS
        if width <= tile + 2 * ctx:
            with circular_time_axis(self.vae) if loop else contextlib.nullcontext():
                yield 0, transform(tensor)
            return
        for start in range(0, width, tile):
            stop = min(start + tile, width)
            if loop:
                cols, left, right = torch.arange(start - ctx, stop + ctx) % width, ctx, ctx
            else:
                cols = torch.arange(max(start - ctx, 0), min(stop + ctx, width))
                left, right = start - int(cols[0]), int(cols[-1]) + 1 - stop
            samples = (cols[:, None] * in_scale + torch.arange(in_scale)).reshape(-1).to(tensor.device)
            out = transform(tensor[..., samples])
            yield start, out[..., left * out_scale: out.shape[-1] - right * out_scale]

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, loop: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        """Decode `(1, C, h, W)` latents tile by tile.

        Yields:
            (first pixel column, `(3, H, w)` float image in [0, 1] where 1 is white = silence).
        """
        scale = self.vae_scale_factor

        def decode_piece(piece: torch.Tensor) -> torch.Tensor:
            image = self.vae.decode(piece.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
            return (image[0].float() / 2 + 0.5).clamp(0, 1)

        for start, image in self._piecewise(latents, latents.shape[-1], loop, decode_piece, 1, scale):
            yield start * scale, image

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, refine_steps: int = 0) -> torch.Tensor:
        """`(3, H, W)` float image in [0, 1] (W a multiple of the VAE factor) -> `(1, C, h, W / factor)` latents.

        The encoder's posterior means, then `refine_steps` Adam steps on them towards the latents the decoder renders
        closest to the image (`refine_latents`).
        """
        scale = self.vae_scale_factor
        pixels = (image * 2 - 1).unsqueeze(0).to(self.vae.device, self.vae.dtype)

        def encode_piece(piece: torch.Tensor) -> torch.Tensor:
            latents = self.vae.encode(piece).latent_dist.mean * self.vae.config.scaling_factor
            return self.refine_latents(latents, piece, refine_steps) if refine_steps else latents

        pieces = [latent for _, latent in
                  self._piecewise(pixels, pixels.shape[-1] // scale, False, encode_piece, scale, 1)]
        return torch.cat(pieces, dim=-1).to(self.unet.dtype)

    @torch.enable_grad()
    def refine_latents(self, latents: torch.Tensor, pixels: torch.Tensor, steps: int) -> torch.Tensor:
        """Adam steps on `(1, C, h, w)` scaled latents that lower the spectral convergence of the magnitudes the
        decoder renders from them against `(1, 3, H, w * factor)` pixels in [-1, 1].

        The small encoder generalises worse than the decoder to timbres it never saw: on held-out audio, mini's
        decoder renders latents found by descent closer than the encoder's (docs/benchmarks.md).
        """
        power, dtype = self.spectrogram.power_for_image, latents.dtype
        target = pixels.float()
        latents = latents.float().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([latents], lr=ENCODE_REFINE_LR)
        for _ in range(steps):
            decoded = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
            loss = magnitude_convergence(decoded.float(), target, power)
            # Only the latents' gradient: the VAE's own parameters may require grad and are left alone.
            (latents.grad,) = torch.autograd.grad(loss, [latents])
            optimizer.step()
        return latents.detach().to(dtype)

    # ---- denoising -----------------------------------------------------------------------------------------------

    def initial_noise(self, timeline: Timeline, width: int) -> torch.Tensor:
        """`(1, C, h, W)` noise: each keyframe's seeded noise, slerped column by column along the timeline."""
        shape = (self.vae.config.latent_channels, self.latent_height, width)
        noises = [torch.randn(shape, generator=torch.Generator().manual_seed(k.seed)) for k in timeline.keyframes]
        if len(noises) == 1:
            return noises[0].unsqueeze(0)
        index, alpha = timeline.blend_at(self.column_seconds(width))
        alpha = torch.from_numpy(alpha).float()
        out = torch.empty(shape)
        for k in np.unique(index):
            cols = torch.from_numpy(np.nonzero(index == k)[0])
            out[..., cols] = slerp(noises[k][..., cols], noises[k + 1][..., cols], alpha[cols])
        return out.unsqueeze(0)

    # ---- the diffusers face --------------------------------------------------------------------------------------

    def columns_for(self, seconds: float, loop: bool = False) -> int:
        """Latent columns for a clip of `seconds`: a loop's whole columns nearest to it (a loop of T frames is T
        hops long), else the fewest whose audio, `(columns * factor - 1) * hop` samples, covers it (then cut to
        the sample)."""
        params, factor = self.spectrogram, self.vae_scale_factor
        if loop:
            return max(1, round(seconds * params.sample_rate / params.hop_length / factor))
        frames = round(seconds * params.sample_rate) / params.hop_length + 1
        return max(1, math.ceil(frames / factor - 1e-9))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seconds: float | None = None,
        loop: bool | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        vocoder: str | None = None,
        bpm: float | None = None,
        key: str | None = None,
        bars: int | None = None,
        meter: str | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> SpectrodiffPipelineOutput | tuple:
        """Text -> audio (and its spectrogram), one clip per prompt: what `spectrodiff generate` makes of the same
        settings (`modes.generate`, its defaults for those left None), in memory instead of files.

        Args:
            prompt: what to hear, or a list of prompts (one clip each).
            negative_prompt: what not to hear (one, or one per prompt).
            num_inference_steps, guidance_scale: as in every diffusers pipeline (`--steps`, `--guidance`).
            seconds: the clip's length (`--seconds`): with a tempo, the whole bars nearest it; without one, a loop
                has whole latent columns (80 ms at Riffusion's settings), a plain clip exactly `round(seconds *
                sample_rate)` samples.
            loop: a seamless loop (the time axis is circular throughout), or a plain clip (`--loop/--no-loop`).
            generator: one, or one per prompt: its seed (`initial_seed()`) is the clip's `--seed`, which draws the
                noise and the model's pick of tempo and key; None: seed 0.
            vocoder: as `--vocoder`: None (the model's own, else the bundled one for its parameters, else
                Griffin-Lim), "griffin-lim", "neural", or a vocoder's name or folder.
            bpm, key, bars, meter: as `--bpm`, `--key`, `--bars` and `--meter`; by default the prompt's words, else
                the pick of a model with musical conditions for the prompt's style.
            output_type: "np" or "pt" for `audios`; "latent" returns the denoised latents `(batch, C, h, W)`
                instead.
        Returns:
            `SpectrodiffPipelineOutput` (or `(audios, images)` without `return_dict`).
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * len(prompts)
        generators = generator if isinstance(generator, list) else [generator] * len(prompts)
        if len(negatives) != len(prompts) or len(generators) != len(prompts):
            raise SpectrodiffError("give one negative prompt and one generator per prompt, or one for all")
        if output_type not in ("np", "pt", "latent"):
            raise SpectrodiffError(f"output_type must be np, pt or latent, not {output_type!r}")
        asked = {"steps": num_inference_steps, "guidance": guidance_scale, "seconds": seconds, "loop": loop,
                 "vocoder": vocoder, "bpm": bpm, "key": key, "bars": bars, "meter": meter}
        asked = {name: value for name, value in asked.items() if value is not None}
        jobs = [GenerateJob(prompt=text, negative=negative or "", seed=generator_seed(noise), **asked)
                for text, negative, noise in zip(prompts, negatives, generators, strict=True)]
        takes, audios, images = [], [], []
        for job in jobs:
            with self.at_tempo(tempo_of(self, job)):
                takes.append(generate(self, job))
                if output_type != "latent":
                    audios.append(takes[-1].audio())
                    images.append(takes[-1].decoding.image())  # whole once the audio is made
        if output_type == "latent":
            return torch.cat([take.decoding.latents for take in takes])
        longest = max(audio.shape[1] for audio in audios)
        stacked = np.stack([np.pad(audio, ((0, 0), (0, longest - audio.shape[1]))) for audio in audios])
        result = (torch.from_numpy(stacked) if output_type == "pt" else stacked, images)
        if not return_dict:
            return result
        rate = self.spectrogram.sample_rate
        return SpectrodiffPipelineOutput(*result, rate, [take.music for take in takes],
                                         [audio.shape[1] / rate for audio in audios])

    # ---- denoising -----------------------------------------------------------------------------------------------

    def windows(self, timeline: Timeline, width: int, loop: bool) -> Windows:
        """The windows that denoise a latent `width` columns wide along `timeline`, each conditioned on the
        keyframes blended at its centre."""
        device, dtype = self._execution_device, self.unet.dtype
        tile = min(self.tile_columns, width)
        starts = window_starts(width, tile, loop)
        text = self.encode_text([k.prompt for k in timeline.keyframes] + [k.negative for k in timeline.keyframes])
        cond, uncond = text.chunk(2)
        centre = self.column_seconds(width)[[(s + tile // 2) % width for s in starts]]
        index, alpha = timeline.blend_at(centre)
        blend = torch.from_numpy(alpha).to(device, dtype)[:, None, None]
        following = np.minimum(index + 1, len(timeline.keyframes) - 1)
        return Windows(starts, width, tile, _window_weights(tile, device),
                       torch.lerp(cond[index], cond[following], blend),
                       torch.lerp(uncond[index], uncond[following], blend),
                       torch.from_numpy(timeline.lerp("guidance", centre)).to(device, dtype),
                       self.music_labels(timeline.music, starts) if self.music_conditioned else None,
                       self.aligned_rows(timeline.music, width))

    def predict_noise(self, model_input: torch.Tensor, t: torch.Tensor, windows: Windows,
                      window_batch: int = 4) -> torch.Tensor:
        """`(1, C, h, W)` scaled latents at timestep `t` -> `(1, C, h, W)` their noise: each window's prediction
        (with classifier-free guidance), `window_batch` windows a UNet call, blended where windows overlap."""
        device = model_input.device
        prediction = torch.zeros_like(model_input, dtype=torch.float32)
        total = torch.zeros(windows.width, device=device)
        for b in range(0, len(windows.starts), window_batch):
            rows = slice(b, b + window_batch)
            cols = torch.stack([_columns(s, windows.tile, windows.width) for s in windows.starts[rows]]).to(device)
            pieces = model_input[0][:, :, cols].permute(2, 0, 1, 3)  # (B, C, h, tile)
            for piece, c in zip(self._guided_noise(pieces, t, windows, rows, cols), cols, strict=True):
                prediction[0].index_add_(-1, c, piece * windows.weights)
                total.index_add_(0, c, windows.weights)
        return (prediction / total).to(self.unet.dtype)

    def _guided_noise(self, pieces: torch.Tensor, t: torch.Tensor, windows: Windows, rows: slice,
                      cols: torch.Tensor) -> torch.Tensor:
        """`(B, C, h, tile)` latents of the windows `rows` (latent columns `cols`, `(B, tile)`) -> `(B, C, h, tile)`
        float32 noise, guided where any of their scales exceeds 1 (one UNet call over both branches)."""
        guidance, emb = windows.guidance[rows], windows.cond[rows]
        music = None if windows.music is None else windows.music[rows]
        aligned = None
        if windows.aligned is not None:
            aligned = windows.aligned[:, :, cols].permute(2, 0, 1, 3).expand(-1, -1, pieces.shape[2], -1)
        use_cfg = bool((guidance > 1).any())
        if use_cfg:
            emb = torch.cat([windows.uncond[rows], emb])
            pieces = torch.cat([pieces, pieces])
            # The unconditional branch knows no music either (nor chords; the bar position is geometry, kept), so
            # guidance sharpens them like the text.
            music = None if music is None else torch.cat([torch.zeros_like(music), music])
            aligned = None if aligned is None else torch.cat([without_chords(aligned), aligned])
        if aligned is not None:
            pieces = torch.cat([pieces, aligned], dim=1)
        eps = self.unet(pieces, t, encoder_hidden_states=emb, class_labels=music).sample.float()
        if not use_cfg:
            return eps
        eps_uncond, eps_cond = eps.chunk(2)
        return eps_uncond + guidance.float()[:, None, None, None] * (eps_cond - eps_uncond)

    def begin_steps(self, timeline: Timeline, width: int, steps: int, keep: torch.Tensor | None) -> np.ndarray:
        """The step at which each latent column `(W,)` (each latent pixel `(h, W)` with a 2-D `keep`) leaves its
        init latents: its strength's share of the `steps` from the end; never (`steps + 1`) where `keep` holds."""
        strength = timeline.lerp("strength", self.column_seconds(width))
        begin = steps - np.round(strength * steps).astype(int)
        if keep is not None:
            begin = np.broadcast_to(begin, keep.shape).copy()
            begin[keep.cpu().numpy()] = steps + 1
        return begin

    @torch.no_grad()
    def denoise(
        self,
        timeline: Timeline,
        width: int,
        num_inference_steps: int = 25,
        loop: bool = False,
        init_latents: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        window_batch: int = 4,
        callback: Callable[[int, int], None] | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise a latent `width` columns wide along `timeline` (what every generation mode runs).

        Args:
            width: latent columns (pixels / vae_scale_factor).
            loop: the time axis is circular.
            init_latents: `(1, C, h, W)` latents of the user's audio; with them each column starts at the step
                its strength gives (img2img), and until then follows the init noised to the current level.
            keep: `(W,)` bool, columns whose init latents are kept to the end (extend, inpaint), or `(h, W)` for
                single latent pixels (a Riffusion mask image).
            window_batch: windows per UNet call (times two with classifier-free guidance).
            callback: called with (step done, total steps).
            noise: `(1, C, h, W)` starting noise; default the keyframes' seeded noise, slerped along the timeline.
        Returns:
            `(1, C, h, W)` denoised latents.
        """
        if not 1 <= num_inference_steps <= 1000:
            raise SpectrodiffError(f"steps must be between 1 and 1000, got {num_inference_steps}")
        device, dtype = self._execution_device, self.unet.dtype
        windows = self.windows(timeline, width, loop)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        noise = (self.initial_noise(timeline, width) if noise is None else noise).to(device, dtype)
        begin = np.zeros(width, dtype=int) if init_latents is None else \
            self.begin_steps(timeline, width, num_inference_steps, keep)
        first = int(begin.min())
        if init_latents is None:
            latents = noise * self.scheduler.init_noise_sigma
        elif first >= num_inference_steps:  # every column is kept: nothing to denoise
            return init_latents
        else:
            if hasattr(self.scheduler, "set_begin_index"):
                self.scheduler.set_begin_index(first)
            latents = self.scheduler.add_noise(init_latents, noise, timesteps[first: first + 1])
        begin_t = torch.from_numpy(begin).to(device)
        with self.progress_bar(total=num_inference_steps - first) as bar, (
                circular_time_axis(self.unet) if loop and len(windows.starts) == 1 else contextlib.nullcontext()):
            for i in range(first, num_inference_steps):
                t = timesteps[i]
                prediction = self.predict_noise(self.scheduler.scale_model_input(latents, t), t, windows, window_batch)
                latents = self.scheduler.step(prediction, t, latents).prev_sample
                held = begin_t > i + 1
                if init_latents is not None and bool(held.any()):
                    target = init_latents if i + 1 == num_inference_steps else self.scheduler.add_noise(
                        init_latents, noise, timesteps[i + 1: i + 2])
                    latents = torch.where(held, target, latents)
                bar.update()
                if callback:
                    callback(i + 1 - first, num_inference_steps - first)
        return latents


def generator_seed(generator: torch.Generator | None) -> int:
    """The seed of a diffusers-style generator as a job takes it (`--seed`): the one it was seeded with, whatever it
    has drawn since, wrapped to the job's 32 bits (an unseeded `torch.Generator()` starts from a 64-bit default, as
    Riffusion's app sends seeds that the server wraps alike); 0 without one."""
    return 0 if generator is None else generator.initial_seed() % (MAX_SEED + 1)


def lora_path(path: Path) -> Path:
    """The LoRA file that `path` (a file, or a training output folder) names."""
    path = Path(path)
    if path.is_dir():
        path = path / LORA_FILE
    if not path.is_file():
        raise SpectrodiffError(f"no such LoRA file: {path}")
    if path.suffix != ".safetensors":
        raise SpectrodiffError(f"--lora takes a .safetensors file, got {path.name}")
    _check_safetensors(path)
    return path


def check_lora_fits(path: Path, params: SpectrogramParams, model: str) -> None:
    """SpectrodiffError naming both parameter sets when a LoRA file records spectrogram parameters (those of the
    dataset `spectrodiff train --lora-rank` trained it on) other than the model's `params`; a file that records none
    (an older one, a diffusers LoRA) is not checked."""
    with safe_open(str(path), "pt") as weights:
        metadata = weights.metadata() or {}
    if "spectrogram" not in metadata:
        return
    try:
        trained = SpectrogramParams.from_dict(json.loads(metadata["spectrogram"]))
    except (ValueError, SpectrodiffError) as exc:
        raise SpectrodiffError(f"LoRA {path}: its recorded spectrogram parameters cannot be read ({exc})") from None
    if trained.to_dict() != params.to_dict():
        raise SpectrodiffError(f"LoRA {path} does not fit {model}: it was trained for "
                               f"{metadata.get('base', 'another model')} on {trained.describe()}, the model has "
                               f"{params.describe()} ({trained.differences(params)})")


# The fields of a UNet or VAE config that decide its size, named when the model would not fit in memory.
SIZE_FIELDS = ("block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
               "transformer_layers_per_block", "latent_channels")


def check_model_size(model_class, config: dict, where: str) -> None:
    """SpectrodiffError naming `where` and its size fields when the model `config` describes (a diffusers class and
    its config dict) has more float32 weights than this machine has memory. Counted on the meta device, before
    any weight is made: a huge block_out_channels otherwise asked the allocator for tens of GB ("internal error"),
    or the OOM killer ended the process."""
    if not isinstance(config, dict):  # from_config takes anything else for a path or a hub id
        raise SpectrodiffError(f"{where}: expected a mapping of the model's settings, got {type(config).__name__}")
    with torch.device("meta"):
        count = sum(p.numel() for p in model_class.from_config(config).parameters())
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if count * 4 > memory:
        sizes = ", ".join(f"{name} {config[name]}" for name in SIZE_FIELDS if name in config)
        raise SpectrodiffError(f"{where}: {sizes} make {count / 1e9:.1f} billion weights ({count * 4 / 1e9:.0f} GB "
                               f"as float32), more than this machine's {memory / 1e9:.0f} GB of memory")


def _check_safetensors(path: Path) -> None:
    """SpectrodiffError naming `path` unless its header and size are whole (read before any model loads: the
    loaders' messages name no file, or say a LoRA does not fit)."""
    try:
        with safe_open(str(path), "pt"):
            pass
    except (SafetensorError, OSError) as exc:
        raise SpectrodiffError(f"{path} is not a readable safetensors file, cut short or damaged "
                               f"({str(exc).splitlines()[0]})") from None


def _check_model_folder(path: Path, allow_pickle: bool) -> None:
    index = path / "model_index.json"
    if not index.is_file():
        raise SpectrodiffError(f"{path} is not a diffusers model folder (no model_index.json)")
    try:
        declared = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpectrodiffError(f"{index} is not valid JSON ({exc})") from None
    for name in REQUIRED_COMPONENTS:
        if name not in declared or not (path / name).is_dir():
            raise SpectrodiffError(f"model folder {path} is missing its {name}/ component")
    for weights in sorted(path.glob("*/*.safetensors")):
        _check_safetensors(weights)
    for name, model_class in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        config = path / name / "config.json"
        try:
            check_model_size(model_class, json.loads(config.read_text()), str(config))
        except (OSError, ValueError, TypeError) as exc:
            raise SpectrodiffError(f"{config} is not a valid {model_class.__name__} config ({exc})") from None
    if allow_pickle:
        return
    for name in ("unet", "vae", "text_encoder", "vocoder"):
        files = [p for p in (path / name).iterdir() if p.is_file()] if (path / name).is_dir() else []
        if not any(p.suffix == ".safetensors" for p in files) and any(p.suffix in PICKLE_SUFFIXES for p in files):
            raise SpectrodiffError(f"{path / name} holds only pickled weights, which can run code when loaded; "
                                   "pass --allow-pickle if you trust where the model came from")
