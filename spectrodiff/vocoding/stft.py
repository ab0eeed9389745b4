"""The STFT pair the phase-recovery and refinement loops iterate on: centred, band-limited, linear or circular."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..codec.mel import hann_window


class FrameTransform:
    """Centred STFT / ISTFT pair (as torch.stft / torch.istft), time-major and band-limited, linear or circular.

    Linear: reflect padding as torch.stft; by default T frames span `(T - 1) * hop` samples. A clip may also be
    longer than its frames (`length`), its first frame centred at sample `start`, with `extra` frames centred
    anywhere else (the mel refinement projects every other frame and adds the clip's end frames that fall between).
    Circular: the signal is one period of a loop, T frames span exactly `T * hop` samples, frame t is centred at
    sample `t * hop`, and both the padding and the overlap-add wrap around, so the last frames overlap the first
    ones as they do when the loop repeats.

    Spectra are `(B, frames + len(extra), bins)`, the extra frames last, holding only the lowest `bins` FFT bins:
    the rest are zero by construction, so the inverse zero-fills them and the forward transform drops them. Only the
    window's `win_length` samples of each frame are cut out and overlap-added (the FFT zero-pads them to `n_fft`),
    so a spectrum's phase is counted from the window's start rather than the FFT frame's: magnitudes are
    torch.stft's, and the pair is still exact. The overlap-add envelope is computed once.
    """

    def __init__(
        self, n_fft: int, hop_length: int, win_length: int, frames: int, bins: int, device: torch.device,
        circular: bool = False, length: int | None = None, start: int = 0, extra: tuple[int, ...] = (),
    ):
        self.window = hann_window(win_length, device)
        self.n_fft, self.hop, self.frames, self.bins, self.circular = n_fft, hop_length, frames, bins, circular
        self.win_length, self.start, self.extra = win_length, start, tuple(extra)
        # torch.stft centres the window inside the FFT frame, and the FFT frame on sample t * hop.
        self.pad = n_fft // 2 - (n_fft - win_length) // 2
        default = frames * hop_length if circular else (frames - 1) * hop_length
        self.length = default if length is None else length
        self.grid_span = (frames - 1) * hop_length + win_length  # the samples the evenly spaced frames cover
        last = max((start + (frames - 1) * hop_length, *self.extra)) if frames else max(self.extra)
        self.span = last + win_length  # the padded samples the frames read (frame at c reads c .. c + win)
        envelope = self._unpad(self._place((self.window**2).expand(1, frames + len(self.extra), win_length)))
        self.inverse_envelope = 1.0 / envelope[0].clamp(min=1e-11)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """`(B, T, win_length)` evenly spaced frames -> `(B, grid_span)`: each frame cut into hop-long pieces, piece
        j of every frame added at once (a few strided adds, much faster than F.fold: docs/benchmarks.md)."""
        batch, count, _ = frames.shape
        pieces = -(-self.win_length // self.hop)
        if pieces * self.hop != self.win_length:
            frames = F.pad(frames, (0, pieces * self.hop - self.win_length))
        cut = frames.reshape(batch, count, pieces, self.hop)
        out = frames.new_zeros(batch, count + pieces - 1, self.hop)
        for j in range(pieces):
            out[:, j: j + count] += cut[:, :, j]
        return out.reshape(batch, -1)[:, : self.grid_span]

    def _place(self, frames: torch.Tensor) -> torch.Tensor:
        """`(B, frames + extra, win_length)` -> `(B, span)`: every frame overlap-added where it reads."""
        grid = self._overlap_add(frames[:, : self.frames])
        if not self.extra and self.start == 0:
            return grid
        out = grid.new_zeros(grid.shape[0], self.span)
        out[:, self.start: self.start + self.grid_span] += grid
        for frame, centre in zip(frames[:, self.frames:].unbind(1), self.extra, strict=True):
            out[:, centre: centre + self.win_length] += frame
        return out

    def _read(self, padded: torch.Tensor) -> torch.Tensor:
        """`(B, span)` padded samples -> `(B, frames + extra, win_length)`: what every frame reads."""
        grid = padded[:, self.start: self.start + self.grid_span].unfold(-1, self.win_length, self.hop)
        if not self.extra:
            return grid
        extra = torch.stack([padded[:, c: c + self.win_length] for c in self.extra], dim=1)
        return torch.cat([grid, extra], dim=1)

    def _wrap(self) -> tuple[int, int]:
        """Circular padding as tiling: padded position j holds sample `(j - pad) mod length`, which is position
        `j + shift` of the signal repeated `reps` times (a loop shorter than an FFT frame wraps more than once)."""
        shift = -self.pad % self.length
        return shift, -(-(shift + self.span) // self.length)

    def _pad(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, N)` -> the samples the frames read: `(B, span)` reflect-padded, or (circular, N = length) wrapped
        around."""
        if self.circular:
            shift, reps = self._wrap()
            return audio.repeat(1, reps)[:, shift: shift + self.span]
        right = max(self.span - self.pad - audio.shape[-1], 0)
        # Reflect padding needs more samples than the pad; clips of a few frames are zero-padded instead.
        mode = "reflect" if audio.shape[-1] > max(self.pad, right) else "constant"
        return F.pad(audio.unsqueeze(1), (self.pad, right), mode=mode).squeeze(1)[:, : self.span]

    def _unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """`(B, span)` overlap-added frames -> `(B, length)`: linear drops the padding (as torch.istft does; adding
        the mirrored half back onto the clip, the exact adjoint of reflect padding, left Griffin-Lim and the mel
        refinement further from the mel: docs/benchmarks.md), circular adds each padded sample back onto the sample
        it wrapped from (the adjoint of `_pad`)."""
        if not self.circular:
            return padded[:, self.pad: self.pad + self.length]
        shift, reps = self._wrap()
        tiled = F.pad(padded, (shift, reps * self.length - shift - self.span))
        return tiled.reshape(padded.shape[0], reps, self.length).sum(dim=1)

    def inverse(self, spec: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, T, bins)` spectrum, times `gain` `(B, T, bins)` when given (one of them complex) -> `(B, length)`."""
        full = self.n_fft // 2 + 1
        if self.bins < full:  # zero-filled above `bins`: written into a buffer whose top stays zero
            dtype = spec.dtype if gain is None else torch.promote_types(spec.dtype, gain.dtype)
            buffer = self._buffer("spectrum", (*spec.shape[:-1], full), dtype, spec.device)
            if gain is None:
                buffer[..., : self.bins] = spec
            else:
                torch.mul(spec, gain, out=buffer[..., : self.bins])
            spec = buffer
        elif gain is not None:
            spec = spec * gain
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1)[..., : self.win_length] * self.window
        return self._unpad(self._place(frames)) * self.inverse_envelope

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """`(B, length)` -> `(B, T, bins)` complex (by default linear mode takes any N and gives `1 + N // hop`
        frames)."""
        frames = self._read(self._pad(audio))
        if self.n_fft > self.win_length:  # zero-padded frames: windowed into a buffer whose tail stays zero (faster
            # than torch's own padding for rfft(n=...): docs/benchmarks.md)
            padded = self._buffer("frames", (*frames.shape[:-1], self.n_fft), frames.dtype, frames.device)
            torch.mul(frames, self.window, out=padded[..., : self.win_length])
        else:
            padded = frames * self.window
        return torch.fft.rfft(padded, dim=-1)[..., : self.bins]

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A zeroed tensor kept between calls, for writing into its leading part (the rest stays zero)."""
        buffer = self.__dict__.get(f"_{name}")
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype or buffer.device != device:
            buffer = torch.zeros(shape, dtype=dtype, device=device)
            setattr(self, f"_{name}", buffer)
        return buffer
