"""A neural mel -> waveform vocoder in the style of Vocos: a ConvNeXt backbone over the mel frames predicts each
frame's STFT magnitude and phase, and an inverse STFT makes the waveform (no upsampling layers, so it is fast).

The magnitude is predicted as a correction to the mel filterbank's least-squares inverse (the magnitude Griffin-Lim
starts from), so loudness passes straight through: the backbone normalises each frame's features, and a vocoder
that had to carry the level through them returned every input at about the same level (a 0.9-amplitude sine came
out at 3 % of its level, measured on the first trained mini vocoder).

It takes the same Riffusion-scale mel that Griffin-Lim takes (`spectrodiff.codec.mel.waveform_to_mel`) and returns
audio on the same [-1, 1] scale, so the two are interchangeable. `vocode` then runs `refine_iterations`
mel-consistency projections (`spectrodiff.vocoding.refine`): the network's overlap-added frames drift from the mel it
was given, and a few projections bring the mel back near Griffin-Lim's while keeping the network's phase and detail.

A vocoder is a diffusers-style folder (`config.json` + `diffusion_pytorch_model.safetensors`) whose config carries
the SpectrogramParams it was trained for; it is either a model's `vocoder/` component or a folder of its own. This
class is plain torch and `load_vocoder` reads such a folder without diffusers, so that `image-to-audio` starts in a
second; `spectrodiff.generation.components.NeuralVocoder` is the same network as a diffusers model (pipelines,
training, `save_pretrained`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..codec.mel import INT16_SCALE
from ..codec.params import Config, SpectrogramParams
from ..errors import SpectrodiffError
from .reconstruct import least_squares_inverse
from .refine import check_refinable, refine_to_mel, refinement_reach

# Mel magnitudes (int16 scale, peaks near 1e7) below this are silence to the vocoder: log(1) = 0 is its floor.
MEL_FLOOR = 1.0
# Predicted STFT magnitudes are capped (as Vocos does) so that an early, untrained network cannot blow up.
MAX_MAGNITUDE = 1e3
# More mel-consistency projections than this take longer than Griffin-Lim itself and gain nothing measurable.
MAX_REFINE_ITERATIONS = 100
# Frames vocoded at once, each chunk with its context either side: at least MIN_CHUNK_FRAMES (20 s at 10 ms; a 60 s
# clip in one chunk held twice the memory, for the same audio: docs/studio.md, load test), and at least
# CONTEXT_SHARE times the vocoder's context, so that the context recomputed at every join stays a small part of the
# work (docs/vocoder.md).
MIN_CHUNK_FRAMES, CONTEXT_SHARE = 2048, 16


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (kernel 7) -> LayerNorm -> pointwise MLP -> layer scale, residual. `(B, C, T)` -> same."""

    def __init__(self, dim: int, intermediate_dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.transpose(1, 2)


class ISTFTHead(nn.Module):
    """`(B, C, T)` features and the mel `(B, n_mels, T)` -> per-frame magnitude and phase -> `(B, (T - 1) * hop)`
    waveform by inverse STFT (centred frames, as the mel's: frame t sits at sample t * hop).

    The log magnitude is the features' correction added to the log of `prior(mel)`, the mel filterbank's
    least-squares inverse on this head's FFT grid, in the units of an STFT of [-1, 1] audio.
    """

    def __init__(self, dim: int, params: SpectrogramParams):
        super().__init__()
        self.n_fft, self.hop_length = 4 * params.hop_length, params.hop_length
        self.out = nn.Linear(dim, self.n_fft + 2)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        # The inverse on the mel's own grid, read at this grid's frequencies (its low filters are narrower than our
        # bins), rescaled from an int16-scale STFT whose window sums to win_length / 2 to ours (n_fft / 2).
        bins = torch.arange(self.n_fft // 2 + 1) * params.n_fft / self.n_fft
        columns = bins.round().long().clamp(max=params.n_fft // 2)
        scale = self.n_fft / (INT16_SCALE * params.win_length)
        self.register_buffer("prior_matrix", least_squares_inverse(params, columns).T * scale, persistent=False)
        self.prior_floor = MEL_FLOOR * scale

    def prior(self, mel: torch.Tensor) -> torch.Tensor:
        """`(B, n_mels, T)` Riffusion-scale mel -> `(B, n_fft // 2 + 1, T)` least-squares magnitude (floored)."""
        return (self.prior_matrix @ mel.float()).clamp(min=self.prior_floor)

    def phase_advance(self, first_frame: int, frames: int, device: torch.device) -> torch.Tensor:
        """`(n_fft // 2 + 1, frames)` phase a stationary tone at each bin's centre frequency reaches at each frame.

        The backbone is translation-equivariant, so for a steady sound it predicts the same phase every frame; in
        a 4-hop FFT that is right only for every fourth bin (k * pi / 2 a hop), and overlap-add cancels the rest
        (a steady 50 Hz sine came out at 4 % of its level). The network predicts phase relative to this advance,
        counted from the absolute frame `first_frame`, so that chunks and loops agree.
        """
        bins = torch.arange(self.n_fft // 2 + 1, device=device)[:, None]
        frame = torch.arange(first_frame, first_frame + frames, device=device)[None, :]
        turns = torch.remainder(bins * frame * self.hop_length, self.n_fft)
        return turns.float() * (2 * torch.pi / self.n_fft)

    def forward(self, x: torch.Tensor, mel: torch.Tensor, first_frame: int = 0) -> torch.Tensor:
        correction, phase = self.out(x.transpose(1, 2)).transpose(1, 2).chunk(2, dim=1)
        magnitude = (torch.log(self.prior(mel)) + correction.float()).exp().clamp(max=MAX_MAGNITUDE)
        phase = phase.float() + self.phase_advance(first_frame, x.shape[-1], x.device)
        spectrum = torch.polar(magnitude, phase)
        length = (x.shape[-1] - 1) * self.hop_length
        return torch.istft(spectrum, self.n_fft, self.hop_length, window=self.window, center=True, length=length)


class NeuralVocoder(nn.Module):
    """Mel `(B, num_frequencies, T)` on Riffusion's scale -> waveform `(B, (T - 1) * hop)` in [-1, 1] units.

    Args:
        spectrogram: the SpectrogramParams (as a dict) of the mels it was trained on.
        dim: channels of the backbone.
        intermediate_dim: channels inside each block's MLP.
        num_layers: ConvNeXt blocks; the receptive field is `6 * num_layers + 7` frames.
        refine_iterations: full-band mel-consistency projections `vocode` runs after the network (`forward` never
            does).
        bass_refine_iterations: projections of the bass on the mel's own grid (`spectrodiff.vocoding.refine`), for
            parameters whose low filters are narrower than the window's FFT bins (Riffusion's).

    The inverse STFT head's FFT size is 4 hops.
    """

    config_name = "config.json"
    weights_name = "diffusion_pytorch_model.safetensors"

    def __init__(self, spectrogram: dict | None = None, dim: int = 384, intermediate_dim: int = 1152,
                 num_layers: int = 8, refine_iterations: int = 0, bass_refine_iterations: int = 0):
        super().__init__()
        check_refine_iterations(refine_iterations)
        check_refine_iterations(bass_refine_iterations, "bass_refine_iterations")
        params = SpectrogramParams.from_dict(spectrogram or {})
        if params.stereo:
            raise SpectrodiffError("a vocoder takes one channel's mel: stereo parameters are vocoded per channel, "
                                   "so train it with stereo: false")
        if refine_iterations or bass_refine_iterations:
            check_refinable(params)
        self.embed = nn.Conv1d(params.num_frequencies, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, 1 / num_layers) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = ISTFTHead(dim, params)
        fields = dict(spectrogram=spectrogram, dim=dim, intermediate_dim=intermediate_dim, num_layers=num_layers,
                      refine_iterations=refine_iterations, bass_refine_iterations=bass_refine_iterations)
        if "_internal_dict" not in self.__dict__:  # the diffusers component has registered them already
            self._internal_dict = Config(fields)

    @property
    def config(self) -> Config:
        return self._internal_dict

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def params(self) -> SpectrogramParams:
        return mono_params(self.config.spectrogram)

    @property
    def context_frames(self) -> int:
        """Frames either side that change a frame's output from `vocode` (embedding, blocks, the head's overlap-add,
        and the refinement's STFTs)."""
        return self._context(self.config.refine_iterations, self.config.bass_refine_iterations)

    def _context(self, refine_iterations: int, bass_refine_iterations: int) -> int:
        network = 3 + 3 * len(self.blocks) + self.head.n_fft // (2 * self.head.hop_length) + 1
        return network + refinement_reach(self.params, refine_iterations, bass_refine_iterations)

    def forward(self, mel: torch.Tensor, first_frame: int = 0) -> torch.Tensor:
        """`(B, n_mels, T)` -> `(B, (T - 1) * hop)`; `first_frame` is the absolute index of the mel's first frame
        (phases are counted from frame 0, so that pieces of one mel agree)."""
        x = torch.log(mel.clamp(min=MEL_FLOOR))
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x.transpose(1, 2)).transpose(1, 2), mel, first_frame)

    def check_params(self, params: SpectrogramParams) -> None:
        """Raise SpectrodiffError, naming both sets, unless `params` (its channels aside; beat-time ones by their
        clock-time twin, which their columns are re-timed to) are the vocoder's."""
        mono = mono_params((params.clock() if params.beat_time else params).config)
        if mono != self.params:
            ours, theirs = self.params.describe(), mono.describe()
            raise SpectrodiffError(f"the vocoder was trained for {ours}, the spectrogram has {theirs}: use a "
                                   "vocoder trained for these parameters (`spectrodiff train-vocoder`) or "
                                   "--vocoder griffin-lim")

    @property
    def chunk_frames(self) -> int:
        """Frames `vocode` takes at once by default."""
        return max(MIN_CHUNK_FRAMES, CONTEXT_SHARE * self.context_frames)

    @torch.no_grad()
    def vocode(self, mel: torch.Tensor, circular: bool = False, chunk_frames: int | None = None,
               refine_iterations: int | None = None, bass_refine_iterations: int | None = None) -> torch.Tensor:
        """Waveform of a mel of any length: the network, then the mel-consistency refinement, in chunks that share
        `context_frames` so that no join can be heard.

        Args:
            mel: `(..., num_frequencies, T)` Riffusion-scale mel (e.g. `(C, n_mels, T)` for C channels).
            circular: the mel is one period of a loop: `T * hop` samples that repeat without a seam (exactly when
                T is a multiple of 4, as the phase advance then wraps too; generated loops are multiples of 8). The
                refinement then runs on the whole period at once, wrapping round, so it needs no context.
            chunk_frames: frames made at once (default `self.chunk_frames`): fewer bound memory tighter, for the
                same audio.
            refine_iterations, bass_refine_iterations: override the config's (both 0: the network's output alone).
        Returns:
            `(..., L)` float32 audio, `L = (T - 1) * hop` (`T * hop` when circular), as `mel_to_waveform` gives.
        """
        *lead, n_mels, width = mel.shape
        chunk_frames = chunk_frames or self.chunk_frames
        flat = mel.reshape(-1, n_mels, width).to(self.device, self.dtype)
        config = self.config
        iterations = config.refine_iterations if refine_iterations is None else refine_iterations
        bass = config.bass_refine_iterations if bass_refine_iterations is None else bass_refine_iterations
        check_refine_iterations(iterations)
        check_refine_iterations(bass, "bass_refine_iterations")
        if circular:
            ctx = self._context(0, 0)
            reps = -(-(ctx + 1) // width)  # short loops need their period repeated to fill the context
            ring = flat.repeat(1, 1, 2 * reps + 1)[..., reps * width - ctx: (reps + 1) * width + ctx + 1]
            audio = self._chunks(ring, ctx, ctx + width, ctx, chunk_frames, (0, 0))
            audio = refine_to_mel(audio, flat.float(), self.params, iterations, bass, circular=True)
        elif width < 2:
            return torch.zeros(*lead, 0)
        else:
            audio = self._chunks(flat, 0, width - 1, self._context(iterations, bass), chunk_frames, (iterations, bass))
        # A mel with nothing above the floor is silence: the network would still paint faint noise there, which a
        # loudness gain then raises to full level.
        audio = torch.where(flat.amax(dim=(1, 2), keepdim=True)[:, 0] > MEL_FLOOR, audio, 0.0)
        return audio.reshape(*lead, -1).cpu()

    def _chunks(self, mel: torch.Tensor, start: int, end: int, ctx: int, chunk_frames: int,
                refine: tuple[int, int]) -> torch.Tensor:
        """`(B, n_mels, T)` -> `(B, (end - start) * hop)`: the samples of frames [start, end), made (and refined
        `refine` = (full-band, bass) projections) in chunks of `chunk_frames` with `ctx` frames of context either
        side; phases are counted from frame `start`."""
        pieces, hop = [], self.head.hop_length
        for first in range(start, end, chunk_frames):
            last = min(first + chunk_frames, end)
            lo, hi = max(first - ctx, 0), min(last + ctx + 1, mel.shape[-1])
            audio = self(mel[..., lo:hi], first_frame=lo - start).float()
            audio = refine_to_mel(audio, mel[..., lo:hi].float(), self.params, *refine, first_frame=lo - start)
            pieces.append(audio[..., (first - lo) * hop: (last - lo) * hop])
        return torch.cat(pieces, dim=-1)


def check_refine_iterations(iterations: object, name: str = "refine_iterations") -> None:
    if isinstance(iterations, bool) or not (isinstance(iterations, int) and 0 <= iterations <= MAX_REFINE_ITERATIONS):
        raise SpectrodiffError(f"{name} must be an integer in [0, {MAX_REFINE_ITERATIONS}], got {iterations!r}")


def mono_params(config: dict) -> SpectrogramParams:
    """SpectrogramParams of a config dict with one channel: a vocoder renders each channel of a stereo mel alike."""
    return SpectrogramParams.from_dict({**config, "stereo": False})


def load_vocoder(path: str | Path) -> NeuralVocoder:
    """A vocoder folder (safetensors only), read without diffusers; SpectrodiffError if it is missing, not a vocoder,
    or corrupt."""
    path = Path(path)
    config_file, weights = path / NeuralVocoder.config_name, path / NeuralVocoder.weights_name
    if not config_file.is_file():
        raise SpectrodiffError(f"{path} is not a vocoder folder (no {NeuralVocoder.config_name}); train one with "
                               "`spectrodiff train-vocoder`")
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError("its config is not a JSON object")
        vocoder = NeuralVocoder(**{k: v for k, v in config.items() if not k.startswith("_")})
        if not weights.is_file():
            raise FileNotFoundError(f"no {weights.name}")
        vocoder.load_state_dict(load_file(str(weights)))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpectrodiffError(f"cannot load the vocoder in {path}: {first}") from None
    vocoder.source = str(path)  # recorded in sidecars
    return vocoder.float().eval()
