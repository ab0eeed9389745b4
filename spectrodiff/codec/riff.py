"""Loop metadata in WAV files, as DAWs read it: the `acid` chunk (tempo, beats, meter, root note: Acid, Ableton
Live, FL Studio, Logic) and the `smpl` chunk (loop points: samplers). libsndfile writes neither, so they are
appended to a finished file here."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpectrodiffError

# acid chunk flags: the root note is set; the file is a loop that stretches with the project's tempo.
ACID_ROOT_NOTE_SET, ACID_STRETCH = 0x02, 0x04
# A loop's root note when it has no key: middle C, with the root-note flag off.
NO_ROOT = 60


@dataclass(frozen=True)
class LoopInfo:
    """What a DAW needs to play a file as a loop in time: tempo (quarter notes a minute), length in quarter-note
    beats, meter, and the MIDI note of the key's tonic (None: no key)."""

    bpm: float
    beats: float
    meter: str
    root_note: int | None = None

    def chunks(self, frames: int, sample_rate: int) -> list[tuple[bytes, bytes]]:
        """(id, body) of the `acid` and `smpl` chunks for a loop of `frames` samples at `sample_rate`."""
        numerator, denominator = (int(part) for part in self.meter.split("/"))
        flags = ACID_STRETCH | (ACID_ROOT_NOTE_SET if self.root_note is not None else 0)
        acid = struct.pack("<IHHfIHHf", flags, NO_ROOT if self.root_note is None else self.root_note, 0x8000, 0.0,
                           round(self.beats), denominator, numerator, self.bpm)
        # smpl: manufacturer, product, sample period (ns), MIDI unity note, pitch fraction, SMPTE format and offset,
        # one loop, no sampler data; the loop: cue id, forward, first and last sample, fraction, played forever.
        smpl = struct.pack("<9I", 0, 0, round(1e9 / sample_rate), NO_ROOT if self.root_note is None else
                           self.root_note, 0, 0, 0, 1, 0) + struct.pack("<6I", 0, 0, 0, frames - 1, 0, 0)
        return [(b"acid", acid), (b"smpl", smpl)]


def append_chunks(path: Path, chunks: list[tuple[bytes, bytes]]) -> None:
    """Add chunks at the end of a RIFF WAVE file and correct its size field."""
    with open(path, "r+b") as f:
        if f.read(4) != b"RIFF" or f.seek(8) != 8 or f.read(4) != b"WAVE":
            raise SpectrodiffError(f"{path} is not a RIFF WAVE file")
        end = f.seek(0, 2)
        if end % 2:  # chunks start on even offsets
            f.write(b"\0")
        for name, body in chunks:
            f.write(name + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b""))
        size = f.tell() - 8
        f.seek(4)
        f.write(struct.pack("<I", size))
