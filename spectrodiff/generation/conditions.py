"""Musical conditions beside the text: tempo, key, meter and where in the bar a stretch of latents starts.

A model trained with them (`music_conditioning: true` in its training config, e.g. mini v2) has a UNet with a
projection class embedding (diffusers' `class_embed_type="projection"`) whose input is `music_features(...)`:
Fourier features of each quantity, as Stable Audio conditions on timing, with a flag per quantity saying whether it
is known. All zeros is "nothing known": what classifier-free guidance's unconditional branch and unlabelled
training tiles get.

Where the tempo and key of a generation come from, first found first: the job's fields (`--bpm`, `--key`), the
prompt's words ("at 120 BPM", "in F minor"), then the model's pick for the prompt's style (`MusicTable`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import SpectrodiffError
from .musical import MAX_BPM, MIN_BPM, NOTE_NAMES, beats_per_bar, parse_key

MUSIC_FEATURES = 20
TABLE_FILE = "music.json"  # in a model folder: the styles it knows, with their tempo ranges and modes
# Modes sung as minor: their third is minor (the key estimator and the key features know major and minor only).
MINOR_MODES = ("minor", "dorian", "phrygian", "aeolian")
_BPM_WORDS = re.compile(r"\b(\d{2,3}(?:\.\d+)?)\s*(?:bpm|beats per minute)\b", re.I)
_KEY_WORDS = re.compile(r"\bin\s+([A-Ga-g][#b♯♭]?)\s*(major|minor|maj|min)\b", re.I)


@dataclass(frozen=True)
class Music:
    """What is known of a clip's music: tempo (quarter notes a minute), key ("F minor"), meter, where the tempo and
    the key came from ("asked", "words" or "model"; None for what is not known), and for a model with aligned
    conditions the chord of each bar from the first downbeat (pitch classes, root first) and where they came from
    ("asked" or "model")."""

    bpm: float | None = None
    key: str | None = None
    meter: str = "4/4"
    source: str | None = None
    key_source: str | None = None
    chords: tuple[tuple[int, ...], ...] | None = None
    chords_source: str | None = None

    def to_dict(self) -> dict:
        out = {"bpm": self.bpm, "key": self.key, "meter": self.meter, "source": self.source,
               "key_source": self.key_source}
        if self.chords is not None:
            from .harmony import chord_name

            out |= {"chords": " ".join(chord_name(chord) for chord in self.chords),
                    "chords_source": self.chords_source}
        return out


def music_features(music: Music | None, bar_phase: float = 0.0) -> np.ndarray:
    """`(MUSIC_FEATURES,)` float32: the conditioning vector of `music` for latents starting `bar_phase` (0-1) of a
    bar after a downbeat. Layout: tempo known, log-tempo and its sines and cosines at 3 frequencies (8); key known,
    tonic on the chromatic circle and on the circle of fifths, minor +1 / major -1 (6); meter known, beats per bar
    scaled (2); bar phase, beat phase as sine and cosine (4, zero without a tempo)."""
    out = np.zeros(MUSIC_FEATURES, dtype=np.float32)
    if music is None:
        return out
    if music.bpm is not None:
        position = math.log(music.bpm / MIN_BPM) / math.log(MAX_BPM / MIN_BPM)  # 0-1 over the allowed range
        out[0], out[1] = 1.0, 2 * position - 1
        for i, frequency in enumerate((1, 2, 4)):
            out[2 + 2 * i: 4 + 2 * i] = (math.sin(math.pi * frequency * position),
                                         math.cos(math.pi * frequency * position))
        beats = beats_per_bar(music.meter)
        out[14], out[15] = 1.0, (beats - 4) / 4
        for i, phase in enumerate((bar_phase, bar_phase * beats)):
            out[16 + 2 * i: 18 + 2 * i] = math.sin(2 * math.pi * phase), math.cos(2 * math.pi * phase)
    if music.key is not None:
        key = parse_key(music.key)
        chromatic, fifths = 2 * math.pi * key.pitch_class / 12, 2 * math.pi * (7 * key.pitch_class % 12) / 12
        out[8:14] = (1.0, math.sin(chromatic), math.cos(chromatic), math.sin(fifths), math.cos(fifths),
                     1.0 if key.minor else -1.0)
    return out


def takes_music(unet) -> bool:
    """Whether a UNet2DConditionModel takes `music_features` (a projection class embedding of their width)."""
    config = unet.config
    return (config.get("class_embed_type") == "projection"
            and config.get("projection_class_embeddings_input_dim") == MUSIC_FEATURES)


def label_key(tonic: str, mode: str) -> str:
    """A catalogue key ("D dorian", "E phrygian") as major or minor by its third: "D minor", "E minor"."""
    return f"{tonic} {'minor' if mode in MINOR_MODES else 'major'}"


def words_music(prompt: str) -> tuple[float | None, str | None]:
    """Tempo and key named in a prompt ("lo-fi at 84 BPM in F minor"), each None when absent."""
    bpm_match, key_match = _BPM_WORDS.search(prompt), _KEY_WORDS.search(prompt)
    bpm = float(bpm_match.group(1)) if bpm_match else None
    if bpm is not None and not MIN_BPM <= bpm <= MAX_BPM:
        bpm = None
    key = parse_key(f"{key_match.group(1)} {key_match.group(2)}").name if key_match else None
    return bpm, key


@dataclass(frozen=True)
class MusicTable:
    """The styles a model was trained on, from its `music.json`: per style its captions, tempo range (BPM), meter
    and modes. It picks a typical tempo and a key for a prompt that names neither."""

    styles: dict[str, dict]

    @classmethod
    def from_dict(cls, data: dict) -> MusicTable:
        try:
            styles = {str(name): {"captions": list(entry["captions"]), "tempo": [float(t) for t in entry["tempo"]],
                                  "meter": str(entry.get("meter", "4/4")), "modes": list(entry["modes"])}
                      | ({"progressions": {str(mode): [[[int(p) for p in chord] for chord in progression]
                                                       for progression in progressions]
                                           for mode, progressions in entry["progressions"].items()}}
                         if "progressions" in entry else {})
                      for name, entry in data["styles"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise SpectrodiffError(f"{TABLE_FILE}: not a table of styles ({exc})") from None
        return cls(styles)

    def to_dict(self) -> dict:
        return {"styles": self.styles}

    def tempo_range(self, style: str | None = None) -> tuple[float, float]:
        """The tempo range (BPM) a style, or else any style of the model, was trained on."""
        ranges = [self.styles[style]["tempo"]] if style else [entry["tempo"] for entry in self.styles.values()]
        return min(low for low, _ in ranges), max(high for _, high in ranges)

    def progression(self, style: str, key: str, seed: int) -> list[tuple[int, ...]] | None:
        """A chord progression typical of the style (one chord a bar), drawn by `seed` from those of its modes that
        sound like `key` (major or minor; any of its modes when none does), in that key; None for a table without
        progressions."""
        progressions = self.styles[style].get("progressions")
        if not progressions:
            return None
        wanted = parse_key(key)
        alike = [mode for mode in progressions if (mode in MINOR_MODES) == wanted.minor] or list(progressions)
        rng = np.random.default_rng([seed, 22])
        mode = alike[int(rng.integers(len(alike)))]
        relative = progressions[mode][int(rng.integers(len(progressions[mode])))]
        return [tuple((wanted.pitch_class + p) % 12 for p in chord) for chord in relative]

    def pick(self, style: str, seed: int) -> Music:
        """The middle of the style's tempo range, and a key drawn by `seed` from its modes (tonic and mode)."""
        entry = self.styles[style]
        low, high = entry["tempo"]
        rng = np.random.default_rng([seed, 21])
        tonic = NOTE_NAMES[int(rng.integers(12))]
        mode = entry["modes"][int(rng.integers(len(entry["modes"])))]
        return Music(float(round((low + high) / 2)), label_key(tonic, mode), entry["meter"], "model", "model")
