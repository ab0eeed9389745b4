"""Keyframes over time: which prompt, seed, strength and guidance apply at each moment of a clip."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .conditions import Music
from .jobs import Keyframe


@dataclass(frozen=True)
class Timeline:
    """Keyframes and a piecewise-linear map from time to a fractional keyframe index.

    At time t the position p = interp(t, times, positions); the conditioning there is keyframe floor(p) blended
    with the next one by p - floor(p) (text embeddings and strength/guidance lerped, noise slerped). `music`: the
    tempo, key and meter of the whole clip, for a model with musical conditions (its downbeat at time 0).
    """

    keyframes: tuple[Keyframe, ...]
    times: tuple[float, ...] = field(default=(0.0,))
    positions: tuple[float, ...] = field(default=(0.0,))
    music: Music | None = None

    @classmethod
    def single(cls, keyframe: Keyframe, music: Music | None = None) -> Timeline:
        return cls((keyframe,), music=music)

    @classmethod
    def morph(cls, keyframes: list[Keyframe], seconds: float, music: Music | None = None) -> Timeline:
        """Evenly spaced keyframes, blending continuously from the first to the last over `seconds`."""
        return cls(tuple(keyframes), (0.0, seconds), (0.0, float(len(keyframes) - 1)), music)

    @classmethod
    def compose(cls, keyframes: list[Keyframe], transition: float, music: Music | None = None,
                scales: list[float] | None = None) -> Timeline:
        """Each keyframe holds for its `seconds`; neighbours blend over `transition` seconds around each boundary.
        `scales`: the timeline's seconds a second of each keyframe's section spans (a beat-time canvas at one tempo
        holding sections at others: section tempo over canvas tempo), so that its span and its half of a blend
        last their seconds once its section is heard at its own tempo; default 1."""
        scales = scales or [1.0] * len(keyframes)
        times, positions, start = [0.0], [0.0], 0.0
        for index, keyframe in enumerate(keyframes[:-1]):
            end = start + keyframe.seconds * scales[index]
            half = min(transition / 2, keyframe.seconds / 2, keyframes[index + 1].seconds / 2)
            times += [end - half * scales[index], end + half * scales[index + 1]]
            positions += [float(index), float(index + 1)]
            start = end
        return cls(tuple(keyframes), tuple(times), tuple(positions), music)

    @property
    def duration(self) -> float | None:
        """Total seconds of a composition (None unless every keyframe has `seconds`)."""
        if all(k.seconds is not None for k in self.keyframes):
            return sum(k.seconds for k in self.keyframes)
        return None

    def blend_at(self, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(N,)` times -> keyframe index `(N,)` int and blend weight towards the next keyframe `(N,)` in [0, 1]."""
        position = np.interp(seconds, self.times, self.positions)
        index = np.minimum(np.floor(position).astype(int), max(len(self.keyframes) - 2, 0))
        return index, np.clip(position - index, 0.0, 1.0)

    def lerp(self, attribute: str, seconds: np.ndarray) -> np.ndarray:
        """A numeric keyframe attribute (strength, guidance) interpolated at `(N,)` times."""
        values = np.array([getattr(k, attribute) for k in self.keyframes] + [getattr(self.keyframes[-1], attribute)])
        index, alpha = self.blend_at(seconds)
        return (1 - alpha) * values[index] + alpha * values[index + 1]

    def to_dict(self) -> dict:
        return {"keyframes": [k.to_dict() for k in self.keyframes], "times": list(self.times),
                "positions": list(self.positions)}
