"""The music benchmark's judges: tempo, beats, downbeats, key, chords and style features heard in audio, independent
of the training labels. They see only audio, plus what a listener is told about a loop (the asked tempo, meter and
bars, to measure against) and, for the tempo, the range of tempi plausible for its style; nothing here reads the
catalogue. benchmarks/music.py calibrates every judge on the held-out render of the reference catalogue before it
judges a model.

Audio is mono `(N,)` at `rate` Hz, resampled once to 22.05 kHz by `Heard`, which keeps what the judges share (mel
and constant-Q spectrograms, onset envelopes); times are seconds; results are plain numbers, tuples and arrays.

    heard = Heard(np.tile(loop, 3), rate)                  # a 3-10 s loop is judged played three times
    tempo = estimate_tempo(heard, tempo_range=(96, 160))   # blind: NaN where no steady beat
    tempo_hit(tempo, asked), tempo_hit(tempo, asked, octave=True)    # Acc1; Acc2 (half or double allowed)
    beats = track_beats(heard, tempo)                      # the tracker's own beats, at its own tempo
    beat_f_measure(beat_grid(asked, heard.seconds), beats) # mir_eval's F-measure, 70 ms
    bar_lines = downbeats(heard, beats, 4)                 # the beats that start a bar
    bar_triads(heard, bar, bars, start=seconds)            # [(root, "major" | "minor" | "diminished"), ...]
    key_name(*estimate_key(heard, bar, start=seconds, bars=bars)) == "F minor"   # parse_key_name: (5, "minor")
    beat_phase_error(heard, 60 / asked, [seconds, 2 * seconds])
"""

import math
import re
from collections.abc import Sequence
from functools import cache, cached_property

import librosa
import mir_eval
import numpy as np
import scipy.ndimage
import scipy.optimize
import soxr

# Pitch-class names, as the reference catalogue writes its keys; spelled out here rather than imported, so the judge
# shares no code with what it judges.
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
# Albrecht & Shanahan (2013) key profiles, C major and C minor: how often each pitch class C, C#, ..., B sounds in a
# corpus of pieces in that key ("The use of large corpora to train a new type of key-finding algorithm", Music
# Perception 31(1)). On 2-4 bar loops of the reference catalogue they name more keys than Krumhansl & Kessler's.
AS_MAJOR = (0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081)
AS_MINOR = (0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052)
TRIADS = {"major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6)}

RATE = 22050  # every judge works at this rate
HOP = 256  # analysis hop, samples at RATE (11.6 ms)
ONSET_HOP = 64  # onset times' hop (2.9 ms)
FPS = RATE / HOP
TEMPI = np.geomspace(30, 320, 720)  # the tempo axis, BPM
DEFAULT_CENTRE, DEFAULT_WIDTH = 120.0, 1.0  # no plausible range: librosa's log-normal prior (BPM, octaves)
RANGE_EDGE = 0.08  # with a plausible range: flat inside it, falling off as a Gaussian of this width (octaves)
# Least pulse clarity (`clarity_at`) for a tempo; below it the audio has no steady beat. On 3-10 s loops played three
# times it drops about 1 % of the catalogue's loops with a pulse (drum and bass, whose kick repeats at 1.5 beats) and
# lets about 10 % of white-noise loops through: a short loop's autocorrelation is noisy.
MIN_CLARITY = 0.3
BEAT_TOLERANCE = 0.07  # seconds: mir_eval's F-measure window, and the first downbeat's
# librosa's beat tracker: how strictly beats keep the tempo. A loop is isochronous; at its default 100 the beats drift
# to off-beats (held-out beat F-measure 0.84 at 100, 0.87 at 400, 0.91 at 3200).
TIGHTNESS = 3200

LOWEST_NOTE, NOTES = 36, 60  # notes heard: MIDI C2-B6
BASS_NOTES = 17  # C2-E3: where the bass names a chord's root
BINS_PER_OCTAVE = 36
HARMONIC_DECAY = 0.6  # a note's k-th harmonic at 0.6^(k-1) of its fundamental, in the note dictionary
BASS_WEIGHT = 0.4  # how much a bass note on a chord's root adds to a triad's fit (fit itself is a correlation)
TONIC_WEIGHT = 1.5  # how much the first bar sounding the tonic triad adds to a key's fit
BEAT_FRACTIONS = np.array([1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1, 4 / 3, 3 / 2, 2, 3, 4, 6])  # style: lags in beats
LOW_ATTACK_WEIGHT = 0.3  # how much low attacks on a bar's first beat add to that grouping's score (downbeats)


class Heard:
    """One clip as the judges hear it: `(N,)` audio at `rate` Hz, resampled to RATE, and its spectrograms and onset
    envelopes, each computed once when first needed."""

    def __init__(self, audio: np.ndarray, rate: int):
        audio = np.asarray(audio, dtype=np.float32)
        self.audio = audio if rate == RATE else soxr.resample(audio, rate, RATE).astype(np.float32)

    @property
    def seconds(self) -> float:
        return len(self.audio) / RATE

    @cached_property
    def mel_db(self) -> np.ndarray:
        """`(64, frames)` log-mel spectrogram, 20 Hz - 8 kHz, dB (80 dB range)."""
        power = np.abs(librosa.stft(self.audio, n_fft=2048, hop_length=HOP)) ** 2
        return librosa.power_to_db(mel_filters(2048)[0] @ power, top_db=80)

    @cached_property
    def onset_envelope(self) -> np.ndarray:
        """`(frames,)` the log-mel spectrogram's rise from frame to frame, averaged over bands, smoothed by a
        Gaussian of one frame (a click's rise is one frame wide while a beat is rarely a whole number of frames:
        unsmoothed, the autocorrelation splits its peak between two lags). What the tempo is measured on."""
        rise = np.maximum(0, np.diff(self.mel_db, axis=1, prepend=self.mel_db[:, :1]))
        return scipy.ndimage.gaussian_filter1d(rise.mean(axis=0), 1.0)

    @cached_property
    def attack_envelope(self) -> np.ndarray:
        """`(frames,)` the rise of the mel power below 4 kHz, compressed (power^0.3), averaged over bands: loud
        attacks - kick, snare, bass, chords - outweigh the many soft ones and the hats above 4 kHz, as they do for
        a listener tapping along. What beats are tracked on."""
        return attacks(self.mel_db[mel_filters(2048)[1] < 4000])

    @cached_property
    def onsets(self) -> np.ndarray:
        """`(onsets,)` seconds of librosa.onset.onset_detect's peaks of an attack envelope from a 1024-point STFT
        at a 64-sample hop: within 15 ms of a click's attack (the 2048-point attack envelope's peaks lead by 36)."""
        filters, centres = mel_filters(1024)
        power = np.abs(librosa.stft(self.audio, n_fft=1024, hop_length=ONSET_HOP)) ** 2
        envelope = attacks(librosa.power_to_db(filters[centres < 4000] @ power, top_db=80))
        return librosa.onset.onset_detect(onset_envelope=envelope, sr=RATE, hop_length=ONSET_HOP, units="time")

    @cached_property
    def low_envelope(self) -> np.ndarray:
        """`(frames,)` the attack envelope of the mel bands below 200 Hz alone: kick drum and bass."""
        power = np.sqrt(librosa.db_to_power(self.mel_db[mel_filters(2048)[1] < 200]))
        return np.maximum(0, np.diff(power, axis=1, prepend=power[:, :1])).mean(axis=0)

    @cached_property
    def spectrum(self) -> np.ndarray:
        """`(bins, frames)` constant-Q magnitudes, 36 bins an octave from C2 (`NOTES` notes and their harmonics)."""
        bins = BINS_PER_OCTAVE * (NOTES // 12) + 12
        return np.abs(librosa.cqt(self.audio, sr=RATE, hop_length=HOP, fmin=librosa.midi_to_hz(LOWEST_NOTE),
                                  n_bins=bins, bins_per_octave=BINS_PER_OCTAVE))

    def frame(self, seconds: float) -> int:
        return int(round(seconds * FPS))


@cache
def mel_filters(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """`(64, n_fft // 2 + 1)` mel filter bank of an STFT at RATE, 20 Hz - 8 kHz, and its `(64,)` centre frequencies
    (built once: librosa's melspectrogram builds it on every call, which costs more than the spectrogram)."""
    return (librosa.filters.mel(sr=RATE, n_fft=n_fft, n_mels=64, fmin=20, fmax=8000),
            librosa.mel_frequencies(66, fmin=20, fmax=8000)[1:-1])


def attacks(mel_db: np.ndarray) -> np.ndarray:
    """`(frames,)` the rise of `(bands, frames)` mel power (dB) compressed as power^0.3, averaged over bands."""
    power = librosa.db_to_power(mel_db) ** 0.3
    return np.maximum(0, np.diff(power, axis=1, prepend=power[:, :1])).mean(axis=0)


# ---- tempo and beats -----------------------------------------------------------------------------------------


def periodicity(envelope: np.ndarray) -> np.ndarray:
    """`(len(TEMPI),)` autocorrelation of an onset envelope at the lag of each tempo, 1 at lag 0 (unbiased: each lag
    averaged over the frames it spans)."""
    centred = envelope - envelope.mean()
    n = len(centred)
    spectrum = np.fft.rfft(centred, 2 * n)
    correlation = np.fft.irfft(spectrum * np.conj(spectrum))[:n] / np.arange(n, 0, -1)
    correlation /= max(correlation[0], 1e-12)
    return np.interp(60 * FPS / TEMPI, np.arange(n), correlation)


def tempo_prior(tempo_range: tuple[float, float] | None) -> np.ndarray:
    """`(len(TEMPI),)` weights: librosa's log-normal (centre 120 BPM, one octave wide) without a range; with one,
    flat inside it and a Gaussian of RANGE_EDGE octaves outside it."""
    if tempo_range is None:
        return np.exp(-0.5 * (np.log2(TEMPI / DEFAULT_CENTRE) / DEFAULT_WIDTH) ** 2)
    low, high = tempo_range
    outside = np.maximum(0, np.maximum(np.log2(low / TEMPI), np.log2(TEMPI / high)))
    return np.exp(-0.5 * (outside / RANGE_EDGE) ** 2)


def clarity_at(strength: np.ndarray, index: int) -> float:
    """How much the `periodicity` curve stands out at TEMPI[index]: its value there less its least value between
    half and one and a half times that lag. About 0 for noise or a held chord, about 1 for a click track."""
    lags = 60 / TEMPI
    around = (lags >= lags[index] / 2) & (lags <= 1.5 * lags[index])
    return float(strength[index] - strength[around].min())


def estimate_tempo(heard: Heard, *, tempo_range: tuple[float, float] | None = None,
                   min_clarity: float = MIN_CLARITY) -> float:
    """Tempo in BPM, or NaN where the audio has no steady beat.

    Blind: it never sees an asked tempo. The onset envelope's autocorrelation over the whole clip (`periodicity`),
    weighted by a prior over tempi (`tempo_prior`): without `tempo_range` librosa's log-normal around 120 BPM; with
    it, the range of tempi plausible for the music (its style's declared range), which settles the octave that an
    autocorrelation cannot (a bar of eighth notes repeats at the beat, at half the beat and at the bar alike): on
    the held-out render's loops with a pulse, 96 % within 4 % with the style's range, 71 % without (91 % with
    half or double allowed). The price: a loop made at half or double a tempo that its range excludes is heard at
    the strongest periodicity inside the range, so octave errors outside a style's range go unheard.

    Where nothing repeats - a pad, noise - the prior alone would pick a tempo, which would read as a hit whenever
    that tempo was asked; so the pulse clarity there (`clarity_at`) must reach `min_clarity`, else NaN (never a hit).
    A 2-10 s loop: hear it tiled (`np.tile(loop, 3)`), so that its beat repeats often enough.
    """
    strength = periodicity(heard.onset_envelope)
    best = int(np.argmax(np.maximum(strength, 0) * tempo_prior(tempo_range)))
    return float(TEMPI[best]) if clarity_at(strength, best) >= min_clarity else math.nan


def pulse_clarity(heard: Heard, bpm: float) -> float:
    """`clarity_at` the tempo nearest `bpm`."""
    return clarity_at(periodicity(heard.onset_envelope), int(np.argmin(np.abs(TEMPI - bpm))))


def tempo_hit(estimated: float, asked: float, tolerance: float = 0.04, *, octave: bool = False) -> bool:
    """Whether `estimated` BPM is within `tolerance` (a fraction) of `asked` (Acc1); with `octave`, of half or
    double `asked` too (Acc2). NaN (no steady beat) is a miss."""
    targets = (asked, asked / 2, asked * 2) if octave else (asked,)
    return any(abs(estimated - target) <= tolerance * target for target in targets)


def track_beats(heard: Heard, bpm: float) -> np.ndarray:
    """`(beats,)` seconds of the beats librosa's dynamic-programming tracker (Ellis 2007) places on the attack
    envelope at `bpm` - the tempo estimate_tempo heard, never an asked one. Empty when `bpm` is NaN."""
    if not math.isfinite(bpm):
        return np.zeros(0)
    _, beats = librosa.beat.beat_track(onset_envelope=heard.attack_envelope, sr=RATE, hop_length=HOP, bpm=bpm,
                                       tightness=TIGHTNESS, trim=False, units="time")
    return np.asarray(beats, dtype=np.float64)


def beat_grid(bpm: float, seconds: float, offset: float = 0.0) -> np.ndarray:
    """`(beats,)` seconds of every beat at `bpm` from `offset` up to `seconds` (a loop's asked grid)."""
    return np.arange(offset, seconds - 1e-9, 60 / bpm)


def beat_f_measure(reference: np.ndarray, estimated: np.ndarray) -> float:
    """mir_eval.beat.f_measure of `estimated` beats against `reference` beats, 70 ms window (without mir_eval's
    trimming of the first 5 s, which a loop is too short for)."""
    if len(estimated) == 0:
        return 0.0
    return float(mir_eval.beat.f_measure(np.asarray(reference, float), np.asarray(estimated, float), BEAT_TOLERANCE))


def downbeats(heard: Heard, beats: np.ndarray, meter: int) -> np.ndarray:
    """The beats that start a bar, of the `meter` ways to group `beats` (seconds) into bars: the one whose bars
    each sound most like a single triad (`triad_fits` of the notes heard in its beats), whose first beats change
    harmony most from the beat before (1 - cosine of their pitch classes) and carry the strongest low attacks (kick,
    bass; x LOW_ATTACK_WEIGHT, as a share of all beats'). Chords change on the bar line in most music; where the
    harmony holds and every beat is struck alike (techno on one chord, reggae's one drop) there is no bar line to
    hear. On the held-out render's loops with a pulse, a downbeat lands within 70 ms of the loop's start in 79 %.
    Empty with fewer than two bars of beats."""
    if len(beats) < 2 * meter:
        return beats[:0]
    frames = np.minimum([heard.frame(b) for b in beats], len(heard.low_envelope) - 1)
    attack = heard.low_envelope[frames] / max(heard.low_envelope[frames].mean(), 1e-12)
    period = float(np.median(np.diff(beats)))
    notes = [notes_between(heard, b, b + period) for b in beats]
    harmony = [_unit(pitch_classes(n)) for n in notes]
    change = np.array([0.0] + [1 - a @ b for a, b in zip(harmony[:-1], harmony[1:], strict=True)])
    scores = []
    for phase in range(meter):
        starts = np.arange(phase, len(beats), meter)
        fits = [max(triad_fits(sum(notes[s:s + meter])).values()) for s in starts if s + meter <= len(beats)]
        scores.append(np.mean(fits) + change[starts[starts > 0]].mean() + LOW_ATTACK_WEIGHT * attack[starts].mean())
    return beats[int(np.argmax(scores))::meter]


# ---- notes, chords and key -----------------------------------------------------------------------------------


@cache
def note_dictionary() -> np.ndarray:
    """`(bins, NOTES)` what each note from C2 looks like in `Heard.spectrum`: its first 10 harmonics at
    HARMONIC_DECAY^(k-1), each spread linearly over its two nearest bins, unit norm."""
    bins = BINS_PER_OCTAVE * (NOTES // 12) + 12
    position = np.arange(bins)[:, None, None]
    harmonics = np.arange(1, 11)[None, None, :]
    centre = BINS_PER_OCTAVE * (np.arange(NOTES)[None, :, None] / 12 + np.log2(harmonics))
    atoms = (HARMONIC_DECAY ** (harmonics - 1) * np.maximum(0, 1 - np.abs(position - centre))).sum(axis=2)
    return atoms / np.linalg.norm(atoms, axis=0)


def notes_between(heard: Heard, start: float, end: float) -> np.ndarray:
    """`(NOTES,)` how strongly each note C2-B6 sounds from `start` to `end` (seconds): the span's mean square-root
    constant-Q spectrum, less its median over an octave around each bin (noise, drums), explained as a non-negative
    sum of `note_dictionary` atoms (NNLS, as Mauch's NNLS chroma), square-rooted. A harmonic is not a note: the
    dictionary takes the fifth and third that a note's own overtones put in a plain chroma."""
    span = heard.spectrum[:, heard.frame(start): max(heard.frame(end), heard.frame(start) + 1)]
    if span.shape[1] == 0:
        return np.zeros(NOTES)
    mean = np.sqrt(span).mean(axis=1)
    excess = np.maximum(0, mean - scipy.ndimage.median_filter(mean, size=BINS_PER_OCTAVE + 1, mode="nearest"))
    return np.sqrt(scipy.optimize.nnls(note_dictionary(), excess)[0])


def pitch_classes(notes: np.ndarray, count: int = NOTES) -> np.ndarray:
    """`(12,)` the first `count` of `(NOTES,)` note strengths folded into pitch classes (index 0 = C)."""
    folded = np.zeros(12)
    np.add.at(folded, (LOWEST_NOTE + np.arange(count)) % 12, notes[:count])
    return folded


def _unit(vector: np.ndarray) -> np.ndarray:
    centred = np.asarray(vector, dtype=np.float64) - np.mean(vector)
    return centred / max(float(np.linalg.norm(centred)), 1e-12)


def triad_template(root: int, quality: str) -> np.ndarray:
    template = np.zeros(12)
    template[[(root + step) % 12 for step in TRIADS[quality]]] = 1
    return template


def triad_fits(notes: np.ndarray) -> dict[tuple[int, str], float]:
    """How well each of the 36 triads (12 roots, major, minor, diminished) fits `(NOTES,)` note strengths: the
    correlation of its template with their pitch classes, plus BASS_WEIGHT x the bass's share on its root (a
    seventh chord holds two triads, C-E-G-B both C major and E minor; the bass tells them apart)."""
    profile = _unit(pitch_classes(notes))
    bass = pitch_classes(notes, BASS_NOTES)
    bass = bass / max(bass.sum(), 1e-12)
    return {(root, quality): float(profile @ _unit(triad_template(root, quality)) + BASS_WEIGHT * bass[root])
            for quality in TRIADS for root in range(12)}


def best_triad(notes: np.ndarray) -> tuple[int, str]:
    fits = triad_fits(notes)
    return max(fits, key=fits.get)


def bar_triads(heard: Heard, bar_seconds: float, bars: int, start: float = 0.0) -> list[tuple[int, str]]:
    """The triad heard in each of `bars` bars of `bar_seconds` from `start` (seconds): (root 0-11, quality)."""
    return [best_triad(notes_between(heard, start + n * bar_seconds, start + (n + 1) * bar_seconds))
            for n in range(bars)]


def triad_of(chord: Sequence[int]) -> tuple[int, str]:
    """The triad a chord's pitch classes (root first: root, third, fifth, any seventh) are built on."""
    root, third, fifth = chord[0] % 12, (chord[1] - chord[0]) % 12, (chord[2] - chord[0]) % 12
    for quality, steps in TRIADS.items():
        if steps[1:] == (third, fifth):
            return root, quality
    raise ValueError(f"not a major, minor or diminished triad: {list(chord)}")


def estimate_key(heard: Heard, bar_seconds: float | None = None, *, start: float = 0.0,
                 bars: int | None = None) -> tuple[int, str]:
    """(tonic pitch class 0=C..11=B, "major" | "minor") of `bars` bars from `start` (seconds; default: to the end).

    The notes heard in each bar (`bar_seconds`; 2 s pieces without), folded into one pitch-class profile and
    matched to a key by `best_key`; with `bar_seconds`, a key whose tonic triad sounds in the first bar gains
    TONIC_WEIGHT x that triad's correlation with the bar's pitch classes: a loop starts on its tonic far more often
    than not, and two to four bars often hold too few pitch classes to tell a key from its neighbours. On the
    held-out render's major and minor loops it names 78 % of keys; fed the exact MIDI notes instead of audio, the
    same rule names 83 % (the profiles alone 56 %): the misses are loops whose first bars are not on the tonic (a
    2-bar excerpt VI-iv of A-flat minor sounds E major). Modal music reads as the major or minor key nearest its
    pitch content; silence as C major."""
    piece = bar_seconds or 2.0
    count = bars or max(1, round((heard.seconds - start) / piece))
    heard_bars = [notes_between(heard, start + n * piece, start + (n + 1) * piece) for n in range(count)]
    opening = _unit(pitch_classes(heard_bars[0]))
    return best_key(pitch_classes(sum(heard_bars)), lambda tonic, mode: (
        TONIC_WEIGHT * opening @ _unit(triad_template(tonic, mode)) if bar_seconds else 0.0))


def best_key(profile: np.ndarray, bonus=lambda tonic, mode: 0.0) -> tuple[int, str]:
    """The (tonic, mode) whose rotated Albrecht-Shanahan profile correlates best with a `(12,)` pitch-class profile
    (index 0 = C), plus `bonus(tonic, mode)`. A flat profile (silence) is C major."""
    if np.ptp(profile) == 0:
        return 0, "major"
    fits = {(tonic, mode): float(_unit(profile) @ _unit(np.roll(reference, tonic))) + bonus(tonic, mode)
            for mode, reference in zip(MODES, (AS_MAJOR, AS_MINOR), strict=True) for tonic in range(12)}
    return max(fits, key=fits.get)


def key_name(tonic: int, mode: str) -> str:
    """"F minor", "C# major": the name of pitch class `tonic` (0=C..11=B, taken mod 12) and `mode`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return f"{NOTE_NAMES[int(tonic) % 12]} {mode}"


_LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACCIDENTALS = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}
_KEY = re.compile(r"\s*([A-Ga-g])([#♯b♭]?)\s+(major|minor)\s*", re.IGNORECASE)


def parse_key_name(name: str) -> tuple[int, str]:
    """(tonic pitch class, "major" | "minor") of a key name such as "F minor", "C# major" or "Db major" (sharps and
    flats alike; "Cb" is 11, "E#" 5). Anything else - "H major", "D dorian" - raises ValueError."""
    match = _KEY.fullmatch(name)
    if match is None:
        raise ValueError(f"not a major or minor key name: {name!r}")
    letter, accidental, mode = match.groups()
    return (_LETTERS[letter.upper()] + _ACCIDENTALS[accidental]) % 12, mode.lower()


def triad_name(root: int, quality: str) -> str:
    """"Fm", "Db", "Bdim": a triad as a chord symbol."""
    return NOTE_NAMES[root % 12] + {"major": "", "minor": "m", "diminished": "dim"}[quality]


# ---- style ---------------------------------------------------------------------------------------------------


def style_features(heard: Heard) -> np.ndarray:
    """`(181,)` what a style sounds like, for a classifier: timbre (the level-normalised log mel's mean and spread
    per band, averaged over 16 groups of 4 bands - finer, they learn one synthesiser's instruments rather than the
    style: 88.6 % across renders against 91.9 % -, 20 MFCCs' mean and spread), rhythm (the periodicity of the
    onset, attack and low-band envelopes pooled over 16 tempo bands, and at 12 fractions and multiples of the beat
    heard blind - swing, meter, syncopation, the kick's pattern; the tempo and its clarity) and harmony (the pitch
    classes heard, turned to the key heard - the mode, sevenths, borrowed chords - their interval content, the
    notes' spread over octaves). Rhythm and harmony are what a second synthesiser rendering the same music keeps."""
    mel = heard.mel_db - heard.mel_db.mean()  # gain does not decide style
    mfcc = librosa.feature.mfcc(S=heard.mel_db, n_mfcc=20)
    bands = np.array_split(np.arange(len(TEMPI)), 16)
    rhythm = [periodicity(envelope) for envelope in (heard.onset_envelope, heard.attack_envelope,
                                                     heard.low_envelope)]
    tempo = estimate_tempo(heard, min_clarity=-math.inf)
    lags = 60 * FPS / TEMPI[::-1]
    at_beats = [np.interp(60 * FPS / tempo * BEAT_FRACTIONS, lags, curve[::-1]) for curve in rhythm]
    notes = notes_between(heard, 0, heard.seconds)
    profile = pitch_classes(notes) / max(pitch_classes(notes).sum(), 1e-12)
    tonic, _ = best_key(profile)
    intervals = [profile @ np.roll(profile, step) for step in range(1, 7)]
    octaves = notes.reshape(NOTES // 12, 12).sum(axis=1) / max(notes.sum(), 1e-12)
    return np.concatenate([mel.mean(axis=1).reshape(16, 4).mean(axis=1), mel.std(axis=1).reshape(16, 4).mean(axis=1),
                           mfcc.mean(axis=1), mfcc.std(axis=1),
                           [curve[band].mean() for curve in rhythm for band in bands], *at_beats,
                           [math.log2(tempo), pulse_clarity(heard, tempo)], np.roll(profile, -tonic), intervals,
                           octaves])


# ---- the beat grid at the wrap -------------------------------------------------------------------------------


def beat_phase_error(heard: Heard, period_seconds: float, boundary_seconds: Sequence[float], *,
                     offset_seconds: float | None = 0.0) -> tuple[float, float]:
    """How far the onsets lie from a beat grid, near given boundaries and elsewhere.

    Meant for a loop played several times in a row with `boundary_seconds` its wrap points (`[k * seconds for k in
    1, 2, ...]`): if the beat grid runs on across the wrap, onsets next to the wraps are as close to the grid as the
    others. Onsets are `Heard.onsets`; the grid has period `period_seconds` (one beat, 60 / BPM) and is anchored at
    `offset_seconds` (0: the loop start), or with `offset_seconds=None` at the circular mean phase of the onsets
    away from the boundaries. An onset's error is its distance to the nearest grid line in beats, 0-0.5.

    Returns (median error of the onsets within one beat of a boundary, median error of the others); NaN for a group
    without onsets. Music with off-beat onsets (eighths, syncopation) errs by 0.25-0.5 on those, so compare the two
    numbers with each other rather than with 0.
    """
    if period_seconds <= 0:
        raise ValueError(f"period_seconds must be positive, not {period_seconds}")
    onsets = heard.onsets
    boundaries = np.asarray(boundary_seconds, dtype=np.float64).reshape(-1)
    near = (np.abs(onsets[:, None] - boundaries[None, :]) <= period_seconds).any(axis=1) if len(boundaries) else \
        np.zeros(len(onsets), dtype=bool)
    if offset_seconds is None:
        turns = 2 * np.pi * onsets[~near] / period_seconds
        offset_seconds = float(np.angle(np.exp(1j * turns).sum()) / (2 * np.pi) * period_seconds) if len(turns) else 0
    phase = (onsets - offset_seconds) / period_seconds
    error = np.abs(phase - np.round(phase))

    def median(values: np.ndarray) -> float:
        return float(np.median(values)) if len(values) else math.nan

    return median(error[near]), median(error[~near])
