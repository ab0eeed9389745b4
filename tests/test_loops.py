"""Loops in musical time: `generate --bpm --bars --key --meter` makes whole bars to the sample, named as sample packs
name loops, with the acid and smpl chunks DAWs read (parsed here by a reader written from the format description,
not with the writer's code)."""

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from spectrodiff.cli import main
from spectrodiff.generation.jobs import GenerateJob
from spectrodiff.generation.modes import make
from spectrodiff.generation.musical import parse_key
from spectrodiff.generation.output import Output
from spectrodiff.generation.takes import resample_loop

FAST = {"steps": 1, "iters": 1}


def riff_chunks(path: Path) -> dict[bytes, bytes]:
    """The chunks of a RIFF WAVE file by id: `RIFF` <size> `WAVE`, then chunks of a 4-byte id, a little-endian
    32-bit size and the body, each padded to an even length."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert int.from_bytes(data[4:8], "little") == len(data) - 8, "the RIFF size covers the whole file"
    chunks, offset = {}, 12
    while offset + 8 <= len(data):
        name, size = data[offset: offset + 4], int.from_bytes(data[offset + 4: offset + 8], "little")
        chunks[name] = data[offset + 8: offset + 8 + size]
        offset += 8 + size + size % 2
    assert offset == len(data)
    return chunks


def acid(body: bytes) -> dict:
    """The acid chunk: flags (0x01 one-shot, 0x02 root note set, 0x04 stretch, 0x08 disk-based), root note, two
    unknown fields, number of beats, meter denominator then numerator, tempo (float)."""
    flags, root, _, _, beats, denominator, numerator, tempo = struct.unpack("<IHHfIHHf", body[:24])
    return {"one_shot": bool(flags & 1), "root_set": bool(flags & 2), "stretch": bool(flags & 4), "root": root,
            "beats": beats, "meter": f"{numerator}/{denominator}", "tempo": tempo}


def smpl_loops(body: bytes) -> tuple[int, list[tuple[int, int, int, int]]]:
    """The smpl chunk: 9 32-bit header fields (the third the sample period in ns, the eighth the number of loops),
    then per loop: cue id, type (0 forward), start, end (inclusive), fraction, play count."""
    header = struct.unpack("<9I", body[:36])
    loops = [struct.unpack("<6I", body[36 + 24 * n: 60 + 24 * n]) for n in range(header[7])]
    return header[2], [(kind, start, end, count) for _, kind, start, end, _, count in loops]


@pytest.mark.parametrize("bpm, bars, meter, key, rate", [
    (100, 2, "4/4", "F minor", None), (97, 3, "6/8", None, 48000), (174, 4, "4/4", "Bbm", None),
    (60, 1, "7/8", "c#", 48000)])
def test_a_loop_is_whole_bars_to_the_sample_and_a_daw_reads_it(pipe, tmp_path, bpm, bars, meter, key, rate):
    numerator, denominator = map(int, meter.split("/"))
    job = GenerateJob(prompt="funk", bpm=bpm, bars=bars, meter=meter, key=key, sample_rate=rate, **FAST)
    result = make(pipe, job, Output(tmp_path))
    rate = rate or pipe.spectrogram.sample_rate
    seconds = bars * numerator * 4 / denominator * 60 / bpm
    frames = round(seconds * rate)
    assert soundfile.info(result.audio).frames == frames and soundfile.info(result.audio).samplerate == rate
    chunks = riff_chunks(result.audio)
    assert len(chunks[b"data"]) == frames * 2 * pipe.spectrogram.channels  # 16-bit PCM
    loop = acid(chunks[b"acid"])
    assert loop == {"one_shot": False, "root_set": key is not None, "stretch": True,
                    "root": 60 + parse_key(key).pitch_class if key else 60, "beats": round(bars * numerator * 4 /
                    denominator), "meter": meter, "tempo": pytest.approx(bpm)}
    period, loops = smpl_loops(chunks[b"smpl"])
    assert period == round(1e9 / rate) and loops == [(0, 0, frames - 1, 0)]
    short = f"_{parse_key(key).short}" if key else ""
    assert result.audio.name == f"funk_{bpm}bpm{short}_s0.wav"
    assert result.record["job"]["bars"] == bars and result.record["job"]["bpm"] == bpm


def test_a_loop_without_a_tempo_has_no_loop_chunks(pipe, tmp_path):
    """The control: the chunks come from the tempo, not from every WAV."""
    result = make(pipe, GenerateJob(prompt="funk", seconds=1.0, **FAST), Output(tmp_path / "plain.wav"))
    assert set(riff_chunks(result.audio)) == {b"fmt ", b"data"}


def test_without_bars_the_loop_is_the_whole_bars_nearest_the_seconds():
    assert GenerateJob(prompt="x", bpm=120, seconds=9.5).bars == 5  # 2 s a bar
    assert GenerateJob(prompt="x", bpm=120, seconds=0.3).bars == 1
    assert GenerateJob(prompt="x", bpm=120, bars=3).seconds == 6.0
    assert GenerateJob(prompt="x", bpm=120, bars=3, seconds=9.5).seconds == 6.0  # bars decide


def test_resampling_a_loop_keeps_its_wrap_seamless():
    """A loop fitted to whole bars by a few hops still repeats without a jump; cutting it to length instead (the
    control) leaves one."""
    n = 44100
    t = np.arange(n) / n
    loop = (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 331 * t)).astype(np.float32)[None]

    def wrap_jump(audio: np.ndarray) -> float:
        """The step from the last sample to the first, against the largest step inside."""
        return abs(float(audio[0, 0] - audio[0, -1])) / np.abs(np.diff(audio[0])).max()

    for m in (n - 300, n + 300):
        for block in (1 << 16, 1000):  # one block, and many
            fitted = np.concatenate(list(resample_loop(loop, m, block)), axis=1)
            assert fitted.shape == (1, m) and wrap_jump(fitted) < 1.05
    assert wrap_jump(loop[:, : n - 300]) > 5


@pytest.mark.parametrize("args, words", [
    (["--bpm", "0"], "--bpm must be between 40 and 240, got 0"),
    (["--bpm", "-90"], "--bpm must be between 40 and 240, got -90"),
    (["--bpm", "nan"], "--bpm is not a number, got nan"),
    (["--bpm", "300"], "--bpm must be between 40 and 240, got 300"),
    (["--bpm", "120", "--bars", "0"], "--bars must be between 1 and 64, got 0"),
    (["--bpm", "120", "--bars", "65"], "--bars must be between 1 and 64, got 65"),
    (["--bars", "4"], "bars needs a tempo: give bpm too"),
    (["--bpm", "240.0001"], "--bpm must be between 40 and 240, got 240.0001"),  # as given, not rounded to 240
    (["--bpm", "1e308"], "--bpm must be between 40 and 240, got 1e+308"),  # not 309 digits
    (["--bpm", "40", "--seconds", "600"], "600 s at 40 BPM are 100 bars of 4/4; at most 64"),  # exit 2, at once
    (["--bpm", "120", "--key", "H major"], "key 'H major' is not a key"),
    (["--bpm", "120", "--meter", "5/3"], "--meter must be one of 4/4, 3/4, 2/4, 5/4, 6/8, 7/8, 12/8, got '5/3'"),
])
def test_bad_musical_options_are_usage_errors(monkeypatch, capsys, tmp_path, args, words):
    monkeypatch.setattr(sys, "argv", ["spectrodiff", "generate", "funk", *args, "-o", str(tmp_path / "x.wav")])
    status = main()
    err = capsys.readouterr().err
    assert status == 2 and words in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir())


def test_a_compose_plan_in_bars_joins_on_bar_lines(pipe, tmp_path):
    """A plan with a tempo gives sections in bars (or seconds that are whole bars): the clip is their sum to the
    sample and every join is a bar line; the sidecar's job keeps the tempo."""
    from spectrodiff.generation.jobs import ComposeJob
    from spectrodiff.generation.plans import load_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text("bpm: 90\nmeter: 6/8\ntransition: 0.5\nkeyframes:\n  - {prompt: a, bars: 2}\n"
                    "  - {prompt: b, seconds: 4}\n  - {prompt: c, bars: 1}\n")
    job = ComposeJob.from_dict(load_plan(plan) | FAST)
    bar = 3 * 60 / 90  # a 6/8 bar is three quarter notes
    assert [k.seconds for k in job.keyframes] == pytest.approx([2 * bar, 4.0, bar])
    result = make(pipe, job, Output(tmp_path / "song.wav"))
    assert soundfile.info(result.audio).frames == round(5 * bar * pipe.spectrogram.sample_rate)
    assert result.record["job"]["bpm"] == 90 and result.record["job"]["meter"] == "6/8"


@pytest.mark.parametrize("plan, words", [
    ("bpm: 120\nkeyframes:\n  - {prompt: a, bars: 2}\n  - prompt: b\n    seconds: 5\n",
     "plan.yaml line 5: 5 s is not whole bars of 4/4 at 120 BPM (2 s a bar)"),
    ("keyframes:\n  - prompt: a\n    bars: 2\n", "plan.yaml line 3: bars needs a tempo: give the keyframe"),
    ("bpm: 120\nkeyframes:\n  - {prompt: a, bars: 2, seconds: 4}\n", "line 3: give bars or seconds, not both"),
    ("bpm: 120\nkeyframes:\n  - prompt: a\n    bars: 0\n", "line 4: bars must be between 1 and 64, got 0"),
    ("bpm: 500\nkeyframes:\n  - {prompt: a, bars: 2}\n", "line 1: bpm must be between 40 and 240, got 500"),
])
def test_plans_in_bars_refuse_what_is_not_whole_bars(tmp_path, plan, words):
    from spectrodiff.errors import SpectrodiffError
    from spectrodiff.generation.plans import load_plan

    (tmp_path / "plan.yaml").write_text(plan)
    with pytest.raises(SpectrodiffError) as error:
        load_plan(tmp_path / "plan.yaml")
    assert words in str(error.value)


@pytest.mark.parametrize("plan", sorted((Path(__file__).parents[1] / "prompts").glob("*.yaml")), ids=lambda p: p.name)
def test_the_example_plans_load(plan):
    from spectrodiff.generation.jobs import ComposeJob
    from spectrodiff.generation.plans import load_plan

    job = ComposeJob.from_dict(load_plan(plan))
    assert 0 < sum(k.seconds for k in job.keyframes) <= 600


# ---- tempo travels with the music (issue 26) -------------------------------------------------------------------

STYLES = {"techno": {"captions": ["techno", "hard techno beat"], "tempo": [130, 138], "meter": "4/4",
                     "modes": ["minor"]},
          "waltz": {"captions": ["a viennese waltz"], "tempo": [90, 180], "meter": "3/4", "modes": ["major"]}}


@pytest.fixture(scope="module")
def conditioned():
    """A tiny pipeline with musical conditions and a table of styles, so that it picks a tempo."""
    from spectrodiff.testing import build_tiny_pipeline
    from spectrodiff.training.train import add_music_conditioning

    pipe = build_tiny_pipeline()
    add_music_conditioning(pipe)
    pipe.register_to_config(music_styles=STYLES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bars_of(path: Path, bpm: float, meter: str) -> float:
    numerator, denominator = map(int, meter.split("/"))
    info = soundfile.info(path)
    return info.frames / info.samplerate / (numerator * 4 / denominator * 60 / bpm)


@pytest.mark.parametrize("prompt, bpm, meter, root", [("techno", 134, "4/4", None),  # the model's pick
                                                      ("a viennese waltz", 135, "3/4", None),
                                                      ("techno at 140 BPM in E minor", 140, "4/4", 64)])  # words
def test_a_loop_without_bpm_is_whole_bars_at_the_tempo_it_was_made_at(conditioned, tmp_path, prompt, bpm, meter,
                                                                       root):
    result = make(conditioned, GenerateJob(prompt=prompt, **FAST), Output(tmp_path / "loop.wav"))
    music = result.record["music"]
    assert (music["bpm"], music["meter"]) == (bpm, meter)
    bars = bars_of(result.audio, bpm, meter)
    bar = int(meter[0]) * 60 / bpm  # quarter-note beats a bar (4/4, 3/4) at the tempo
    assert bars == pytest.approx(round(bars), abs=1e-4) and round(bars) == round(5.12 / bar)  # nearest 5.12 s
    chunks = riff_chunks(result.audio)
    loop = acid(chunks[b"acid"])
    assert (loop["tempo"], loop["meter"], loop["beats"]) == (pytest.approx(bpm), meter, round(bars) * int(meter[0]))
    assert loop["root_set"] and (root is None or loop["root"] == root)
    frames = soundfile.info(result.audio).frames
    assert smpl_loops(chunks[b"smpl"])[1] == [(0, 0, frames - 1, 0)]


def test_a_plain_clip_keeps_its_length_unless_its_tempo_was_asked(conditioned, tmp_path):
    """Only a loop rounds to the bars of the model's pick; a plain clip keeps the seconds asked for (no chunks), and
    one whose prompt names a tempo is whole bars of it."""
    picked = make(conditioned, GenerateJob(prompt="techno", loop=False, **FAST), Output(tmp_path / "a.wav"))
    assert picked.record["music"]["source"] == "model" and soundfile.info(picked.audio).frames == round(5.12 * 44100)
    assert b"acid" not in riff_chunks(picked.audio) and "tempo" not in picked.record
    said = make(conditioned, GenerateJob(prompt="techno at 140 BPM", loop=False, **FAST),
                Output(tmp_path / "b.wav"))
    bars = bars_of(said.audio, 140, "4/4")
    assert bars == pytest.approx(3, abs=1e-4) and acid(riff_chunks(said.audio)[b"acid"])["beats"] == 12
    assert b"smpl" not in riff_chunks(said.audio) or smpl_loops(riff_chunks(said.audio)[b"smpl"])[1] == []


def test_a_meter_is_used_with_a_picked_tempo_and_refused_without_one(conditioned, pipe, tmp_path):
    result = make(conditioned, GenerateJob(prompt="techno", meter="6/8", **FAST), Output(tmp_path / "a.wav"))
    assert acid(riff_chunks(result.audio)[b"acid"])["meter"] == "6/8"
    from spectrodiff.errors import SpectrodiffError

    with pytest.raises(SpectrodiffError, match="meter 6/8 needs a tempo: give bpm"):
        make(pipe, GenerateJob(prompt="techno", meter="6/8", **FAST), Output(tmp_path / "b.wav"))
    assert not (tmp_path / "b.wav").exists()


def test_the_bundled_plan_in_bars_writes_a_named_file_with_its_tempo(pipe, tmp_path):
    """`compose prompts/sax-to-beats-in-bars.yaml` without -o named its file from a key the plan has not (an
    internal error); its sections, one bar each here, keep the plan's tempo in the WAV."""
    from spectrodiff.generation.jobs import ComposeJob
    from spectrodiff.generation.plans import load_plan

    plan = load_plan(Path(__file__).parents[1] / "prompts" / "sax-to-beats-in-bars.yaml")
    short = [{"prompt": k.prompt, "seed": k.seed, "seconds": 2.5} for k in plan["keyframes"]]  # a bar at 96 BPM
    job = ComposeJob.from_dict({"keyframes": short, "bpm": 96, "transition": 0.5} | FAST)
    result = make(pipe, job, Output(tmp_path))
    assert result.audio == tmp_path / "jazzy-saxophone-to-funky-piano_96bpm_s1.wav"
    chunks = riff_chunks(result.audio)
    assert acid(chunks[b"acid"])["beats"] == 12 and acid(chunks[b"acid"])["tempo"] == pytest.approx(96)
    assert smpl_loops(chunks[b"smpl"])[1] == []  # a song, not a loop: no loop points


def tempo_wav(path: Path, seconds: float = 4.0) -> Path:
    """A 2-bar WAV at 120 BPM in F with its acid and smpl chunks."""
    from spectrodiff.codec.riff import LoopInfo, append_chunks
    from spectrodiff.signals import mix

    soundfile.write(path, mix(seconds), 44100, subtype="PCM_16")
    append_chunks(path, LoopInfo(120, seconds * 2, "4/4", 65).chunks(round(seconds * 44100), 44100))
    return path


@pytest.mark.parametrize("mode, fields, seconds", [("remix", {"strength": 0.5}, 4.0),
                                                    ("extend", {"seconds": 2.0}, 6.0),
                                                    ("inpaint", {"start": 1.0, "end": 2.0}, 4.0)])
def test_what_is_made_of_a_wav_with_a_tempo_keeps_it(pipe, tmp_path, mode, fields, seconds):
    from spectrodiff.generation.jobs import JOBS

    source = tempo_wav(tmp_path / "in.wav")
    result = make(pipe, JOBS[mode].from_dict({"audio": source, "prompt": "organ", **fields, **FAST}),
                  Output(tmp_path / "out.wav"))
    chunks = riff_chunks(result.audio)
    frames = soundfile.info(result.audio).frames
    assert frames == round(seconds * 44100)
    assert acid(chunks[b"acid"]) | {"tempo": 120} == {"one_shot": False, "root_set": True, "stretch": True,
                                                      "root": 65, "beats": seconds * 2, "meter": "4/4", "tempo": 120}
    assert acid(chunks[b"acid"])["tempo"] == pytest.approx(120)
    assert smpl_loops(chunks[b"smpl"])[1] == [(0, 0, frames - 1, 0)]  # the loop covers the new length
    plain = tmp_path / "plain.wav"
    soundfile.write(plain, soundfile.read(source)[0], 44100, subtype="PCM_16")  # the control: no chunks in
    again = make(pipe, JOBS[mode].from_dict({"audio": plain, "prompt": "organ", **fields, **FAST}),
                 Output(tmp_path / "again.wav"))
    assert set(riff_chunks(again.audio)) == {b"fmt ", b"data"}


def test_batch_lines_are_named_as_generate_names_them(pipe, tmp_path):
    from spectrodiff.generation.batch import run_line

    first = {"mode": "generate", "prompt": "house", "bpm": 124, "bars": 1, "key": "A minor", "seed": 5, **FAST}
    other = first | {"steps": 2}  # the same name, another job
    made = [run_line(pipe, line, out=tmp_path) for line in (first, other)]
    assert made[0].audio == tmp_path / "house_124bpm_Amin_s5.wav"
    assert made[1].audio.name.startswith("house_124bpm_Amin_s5-") and made[1].audio != made[0].audio
    assert acid(riff_chunks(made[1].audio)[b"acid"])["tempo"] == pytest.approx(124)
    assert [run_line(pipe, line, out=tmp_path) for line in (first, other)] == [None, None]  # a rerun finds both


def test_batch_lines_sharing_a_name_are_planned_apart_before_any_runs(tmp_path):
    """Processes side by side (`accelerate launch`) each plan the whole batch before any line has run: a later line
    whose name an earlier one claimed takes its digest name then, not when it finds the earlier line's files
    (which another process may not have written yet)."""
    from spectrodiff.generation.batch import line_job, line_target, plan_lines

    first = {"mode": "generate", "prompt": "house", "bpm": 124, "bars": 1, "seed": 5, **FAST}
    other = first | {"steps": 2}  # the same name, another job
    lines = [(1, first), (3, other), (4, first | {"out": str(tmp_path / "own.wav")})]
    targets = [target for _, target in plan_lines(lines, out=tmp_path)]
    assert targets[0] == tmp_path / "house_124bpm_s5.wav" and targets[1].name.startswith("house_124bpm_s5-")
    assert targets[2] == tmp_path / "own.wav" and not any(tmp_path.iterdir())  # planned, nothing written
    # The control: on an empty folder, the later line alone would take the plain name as well.
    assert line_target(line_job(other), other, tmp_path) == targets[0]


def test_a_batch_line_of_too_many_bars_is_refused_before_the_model_loads():
    from spectrodiff.errors import SpectrodiffError
    from spectrodiff.generation.batch import line_job

    with pytest.raises(SpectrodiffError, match="33 s at 240 BPM are 66 bars of 2/4; at most 64"):
        line_job({"mode": "generate", "prompt": "x", "bpm": 240, "meter": "2/4", "seconds": 33})


def test_info_shows_a_wavs_tempo_key_beats_and_loop(tmp_path, capsys, monkeypatch):
    source = tempo_wav(tmp_path / "in.wav")
    plain = tmp_path / "plain.wav"
    soundfile.write(plain, soundfile.read(source)[0], 44100, subtype="PCM_16")
    for path in (source, plain):
        monkeypatch.setattr(sys, "argv", ["spectrodiff", "info", str(path)])
        assert main() == 0
    out = capsys.readouterr().out
    assert "tempo        120 BPM" in out and "beats        8" in out and "meter        4/4" in out
    assert "key          root F (MIDI 65)" in out and "loop         samples 0-176399 (0.000-4.000 s)" in out
    assert "tempo        none recorded (no acid chunk)" in out  # the plain file


def test_image_to_audio_says_which_vocoder_rendered(tmp_path, capsys, monkeypatch):
    from spectrodiff import SpectrogramParams
    from spectrodiff.codec.convert import audio_to_image, save_image
    from spectrodiff.signals import mix

    image = save_image(tmp_path / "s.png", audio_to_image(mix(1.0)[None], SpectrogramParams(num_frequencies=64)))
    monkeypatch.setattr(sys, "argv", ["spectrodiff", "image-to-audio", str(image), "-o", str(tmp_path / "s.wav"),
                                      "--iters", "1"])
    assert main() == 0
    assert "rendered by griffin-lim" in capsys.readouterr().err
