"""Loop metadata in WAV files, as DAWs read it: the `acid` chunk (tempo, beats, meter, root note: Acid, Ableton
Live, FL Studio, Logic) and the `smpl` chunk (loop points: samplers). libsndfile writes neither and reads neither,
so they are appended to a finished file here, and read back (`read_loop_info`) to carry them from an input to what
is made of it and to show them (`spectrodiff info`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import SpectrodiffError

# acid chunk flags: the root note is set; the file is a loop that stretches with the project's tempo.
ACID_ROOT_NOTE_SET, ACID_STRETCH = 0x02, 0x04
# A loop's root note when it has no key: middle C, with the root-note flag off.
NO_ROOT = 60
# Chunks read back are small (acid 24 bytes, smpl 36 + 24 a loop); a larger one is not what it claims.
MAX_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class LoopInfo:
    """What a DAW needs to play a file in time: tempo (quarter notes a minute), length in quarter-note beats, meter,
    the MIDI note of the key's tonic (None: no key), and whether the file is a loop (the smpl chunk then holds one
    loop over the whole file; a clip that is not a loop has none)."""

    bpm: float
    beats: float
    meter: str
    root_note: int | None = None
    loop: bool = True

    def for_length(self, seconds: float) -> LoopInfo:
        """The same tempo, meter and key for a file `seconds` long (an extended input)."""
        return replace(self, beats=seconds * self.bpm / 60)

    def chunks(self, frames: int, sample_rate: int) -> list[tuple[bytes, bytes]]:
        """(id, body) of the `acid` and `smpl` chunks for a loop of `frames` samples at `sample_rate`."""
        numerator, denominator = (int(part) for part in self.meter.split("/"))
        flags = ACID_STRETCH | (ACID_ROOT_NOTE_SET if self.root_note is not None else 0)
        acid = struct.pack("<IHHfIHHf", flags, NO_ROOT if self.root_note is None else self.root_note, 0x8000, 0.0,
                           round(self.beats), denominator, numerator, self.bpm)
        # smpl: manufacturer, product, sample period (ns), MIDI unity note, pitch fraction, SMPTE format and offset,
        # the number of loops, no sampler data; a loop: cue id, forward, first and last sample, fraction, played
        # forever.
        smpl = struct.pack("<9I", 0, 0, round(1e9 / sample_rate), NO_ROOT if self.root_note is None else
                           self.root_note, 0, 0, 0, int(self.loop), 0)
        if self.loop:
            smpl += struct.pack("<6I", 0, 0, 0, frames - 1, 0, 0)
        return [(b"acid", acid), (b"smpl", smpl)]


def read_chunks(path: Path, names: tuple[bytes, ...] = (b"acid", b"smpl")) -> dict[bytes, bytes]:
    """The bodies of the chunks `names` of a RIFF WAVE file, by id (the audio is skipped, not read); {} for a file
    that is not RIFF WAVE or is cut short."""
    found = {}
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:] != b"WAVE":
            return {}
        while len(head := f.read(8)) == 8:
            name, size = head[:4], struct.unpack("<I", head[4:])[0]
            if name in names and size <= MAX_CHUNK_BYTES:
                body = f.read(size)
                if len(body) < size:
                    break
                found[name] = body
                f.seek(size % 2, 1)
            else:
                f.seek(size + size % 2, 1)
    return found


def read_loop_info(path: Path) -> tuple[LoopInfo, list[tuple[int, int]]] | None:
    """A WAV's tempo, beats, meter and root note (its acid chunk) and its loops' first and last samples (its smpl
    chunk); None without an acid chunk (or for a file that is not WAV)."""
    chunks = read_chunks(path)
    if len(chunks.get(b"acid", b"")) < 24:
        return None
    flags, root, _, _, beats, denominator, numerator, bpm = struct.unpack("<IHHfIHHf", chunks[b"acid"][:24])
    if not (bpm > 0 and numerator and denominator):
        return None
    loops = []
    smpl = chunks.get(b"smpl", b"")
    if len(smpl) >= 36:
        count = struct.unpack("<I", smpl[28:32])[0]
        for n in range(min(count, (len(smpl) - 36) // 24)):
            _, _, first, last, _, _ = struct.unpack("<6I", smpl[36 + 24 * n: 60 + 24 * n])
            loops.append((first, last))
    info = LoopInfo(round(bpm, 4), beats, f"{numerator}/{denominator}",
                    root if flags & ACID_ROOT_NOTE_SET else None, loop=bool(loops))
    return info, loops


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
