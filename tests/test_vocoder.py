"""The neural vocoder (spectrodiff/vocoder.py) and its training (training/vocoder.py, `spectrodiff train-vocoder`):
shapes, exact chunking and loops, determinism, loading and bad input, a short training run that learns, and
generation through `--vocoder`."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

from spectrodiff import SpectrodiffError, SpectrogramParams, audio_to_image, image_to_audio
from spectrodiff.cli import app
from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.generation.components import VocoderComponent
from spectrodiff.generation.jobs import ExtendJob, GenerateJob, InpaintJob
from spectrodiff.generation.modes import make
from spectrodiff.generation.output import Output
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.metrics import loop_wrap_ratio, mel_spectral_convergence
from spectrodiff.signals import SIGNALS
from spectrodiff.training import core
from spectrodiff.training.core import read_log, weights_digest
from spectrodiff.training.vocoder import MultiResolutionDiscriminator, VocoderOptions, train_vocoder
from spectrodiff.vocoding.refine import BASS_BAND_HZ, _at_rate, refine_to_mel, stage_rate
from spectrodiff.vocoding.registry import choose_vocoder, resolve_vocoder
from spectrodiff.vocoding.vocoder import load_vocoder

HOP = 441
SMALL = dict(dim=32, intermediate_dim=64, num_layers=2)


def tiny_vocoder(params: SpectrogramParams, seed: int = 0, **sizes) -> VocoderComponent:
    torch.manual_seed(seed)
    return VocoderComponent(spectrogram=params.to_dict(), **(SMALL | sizes)).eval()


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def mel64():
    """`(1, 64, T)` mel of 3 s of chords and drums, 64 bins."""
    params = SpectrogramParams(num_frequencies=64)
    audio = torch.from_numpy(SIGNALS["mix"](3.0, seed=1))
    return params, audio, waveform_to_mel(audio[None], params)


def test_shapes_follow_the_mel(mel64):
    params, _, mel = mel64
    vocoder = tiny_vocoder(params)
    width = mel.shape[-1]
    assert vocoder(mel).shape == (1, (width - 1) * HOP)
    # Leading dims are kept (channels, batches), as mel_to_waveform does; loops are T * hop long.
    assert vocoder.vocode(mel.expand(2, 3, -1, -1)).shape == (2, 3, (width - 1) * HOP)
    assert vocoder.vocode(mel, circular=True).shape == (1, width * HOP)
    assert vocoder.vocode(mel[..., :1]).shape == (1, 0)


@pytest.mark.parametrize("refine", [(0, 0), (2, 0), (2, 3)])
def test_chunks_and_loops_are_exact(mel64, refine):
    params, _, mel = mel64
    iterations, bass = refine
    vocoder = tiny_vocoder(params, num_layers=3, refine_iterations=iterations, bass_refine_iterations=bass)
    with torch.no_grad():
        whole = refine_to_mel(vocoder(mel), mel, params, iterations, bass)
    # Chunks share enough context frames (network and refinement) that their joins are the unchunked output.
    torch.testing.assert_close(vocoder.vocode(mel, chunk_frames=37), whole, rtol=0, atol=1e-6)
    # A loop is the middle period of the loop played many times: nothing marks its wrap point (for loops of a
    # multiple of 4 frames, where the phase advance wraps too).
    reps = 2 * -(-vocoder.context_frames // 300) + 1
    mel = mel[..., :300]
    loop = vocoder.vocode(mel, circular=True, chunk_frames=50)
    width = mel.shape[-1]
    played = vocoder.vocode(mel.repeat(1, 1, reps))
    torch.testing.assert_close(loop, played[..., reps // 2 * width * HOP: (reps // 2 + 1) * width * HOP], rtol=0,
                               atol=1e-6)
    # So short a loop that the context wraps round it more than once.
    short = mel[..., :8]
    reps = 2 * -(-vocoder.context_frames // 8) + 1
    tiled = vocoder.vocode(short.repeat(1, 1, reps))
    torch.testing.assert_close(vocoder.vocode(short, circular=True),
                               tiled[..., reps // 2 * 8 * HOP: (reps // 2 + 1) * 8 * HOP], rtol=0, atol=1e-6)


def test_steady_tones_survive_at_every_bin():
    """Overlap-add keeps a steady tone whatever its frequency: an untrained vocoder (phase = the bin-centre
    advance) returns a sine near its level between bins as well as on them."""
    params = SpectrogramParams(num_frequencies=128)
    vocoder = tiny_vocoder(params)
    torch.nn.init.zeros_(vocoder.head.out.weight)
    torch.nn.init.zeros_(vocoder.head.out.bias)
    t = torch.arange(2 * 44100) / 44100
    for hz in (50.0, 75.0, 137.0, 440.0, 1000.0):
        sine = 0.5 * torch.sin(2 * torch.pi * hz * t)
        out = vocoder.vocode(waveform_to_mel(sine[None], params))[0]
        level = float(out[22050:-22050].std() / sine[22050:-22050].std())
        assert 0.4 < level < 2.5, (hz, level)


def test_refinement_pulls_the_mel_back_and_keeps_the_rest(mel64):
    """The mel-consistency projections bring an untrained vocoder's mel close to its input's, converge as they go,
    and leave the band above the mel's highest filter as the network made it."""
    params, audio, mel = mel64
    vocoder = tiny_vocoder(params)
    raw = vocoder.vocode(mel, refine_iterations=0)[0]
    convergence = [mel_spectral_convergence(audio, vocoder.vocode(mel, refine_iterations=k)[0], params)
                   for k in (0, 4, 16)]
    assert convergence[0] > 0.5 and convergence[1] < 0.6 * convergence[0] and convergence[2] < 0.6 * convergence[1]
    refined = vocoder.vocode(mel, refine_iterations=16)[0]
    spectra = [torch.fft.rfft(x) for x in (raw, refined)]
    above = int(len(spectra[0]) * 12000 / 22050)  # the filters end at 10 kHz; their bins' window leaks a little
    tolerance = 1e-3 * float(spectra[0].abs().max())
    torch.testing.assert_close(spectra[1][above:], spectra[0][above:], rtol=0, atol=tolerance)
    assert vocoder.config.refine_iterations == 0 and vocoder.vocode(mel).equal(raw[None])


def test_bass_refinement_resolves_narrow_filters():
    """At Riffusion's 512 bins the lowest filters are narrower than the window's 10 Hz FFT bins: full-band
    projections alone stall there, and the bass stage on the mel's own grid takes the mel much closer; it changes
    nothing above its band."""
    params = SpectrogramParams()
    vocoder = tiny_vocoder(params)
    audio = torch.from_numpy(SIGNALS["mix"](3.0, seed=2))
    mel = waveform_to_mel(audio[None], params)
    convergence = {refine: mel_spectral_convergence(audio, vocoder.vocode(mel, refine_iterations=refine[0],
                                                                          bass_refine_iterations=refine[1])[0],
                                                    params)
                   for refine in ((0, 0), (8, 0), (8, 16))}
    assert convergence[(8, 16)] < 0.6 * convergence[(8, 0)] < 0.6 * convergence[(0, 0)], convergence
    raw, bass = (vocoder.vocode(mel, refine_iterations=0, bass_refine_iterations=b)[0] for b in (0, 16))
    taper = torch.hann_window(len(raw))  # whole-clip spectra, without the leakage of the clip's cut ends
    spectra = [torch.fft.rfft(x * taper) for x in (raw, bass)]
    p, q = stage_rate(params, BASS_BAND_HZ)  # 2/9: the bass stage's band ends at its Nyquist frequency, 4900 Hz
    above = int(len(spectra[0]) * (params.sample_rate * p / q / 2 + 100) / 22050)
    torch.testing.assert_close(spectra[1][above:], spectra[0][above:], rtol=0,
                               atol=1e-4 * float(spectra[0].abs().max()))
    assert float((spectra[1][:above] - spectra[0][:above]).abs().max()) > 0.1 * float(spectra[0].abs().max())


def test_the_bass_stage_runs_at_a_fraction_of_the_rate_that_holds_its_band():
    """Riffusion's bass band (3.5 kHz) runs at 2/9 of 44.1 kHz, where hop, window and FFT are whole samples; going
    down and back up keeps what lies inside the band (linear and circular) and removes what lies above it."""
    params = SpectrogramParams()
    assert stage_rate(params, BASS_BAND_HZ) == (2, 9)
    assert stage_rate(params, 30000) == (1, 1)  # no lower rate holds it
    t = torch.arange(4 * 44100, dtype=torch.float64) / 44100
    inside = (torch.sin(2 * torch.pi * 440 * t) + 0.5 * torch.sin(2 * torch.pi * 3300 * t)).float()[None]
    above = torch.sin(2 * torch.pi * 6000 * t).float()[None]
    for circular in (False, True):
        through = _at_rate(lambda x: x, inside, (2, 9), circular)
        middle = slice(4410, -4410) if not circular else slice(None)
        torch.testing.assert_close(through[:, middle], inside[:, middle], rtol=0, atol=2e-3)
        assert float(_at_rate(lambda x: x, above, (2, 9), circular)[:, middle].abs().max()) < 2e-3


def test_refinement_reaches_a_clips_last_frame_whatever_the_stride():
    """Each stage projects every other frame from frame 0; a clip whose last frame the stride passes by (an even
    frame count: every generated tile) gets it projected too, so its last frames end as close to their mel as with
    one frame more (1.25x here; 2.3x when a reflected frame past the end stood in for it)."""
    params, vocoder = SpectrogramParams(), resolve_vocoder("riffusion")
    mel = waveform_to_mel(torch.from_numpy(SIGNALS["chord"](5.12))[None], params)

    def last_frames_error(frames: int) -> float:
        piece = mel[..., :frames]
        error = (waveform_to_mel(vocoder.vocode(piece), params) - piece).norm(dim=1) / piece.norm(dim=1)
        return float(error[0, -3:].mean())

    assert last_frames_error(512) < 1.5 * last_frames_error(513)


def test_refinement_picks_frames_by_absolute_index(mel64):
    """Each stage projects every other frame, counted from absolute frame 0 (`first_frame`): a loop started one
    frame later refines to the same loop turned by a frame, which the other half of the frames would not give.
    Clips too short for the stride and loops of an odd number of frames (every frame then) still come closer to
    their mel."""
    params, _, mel = mel64
    vocoder = tiny_vocoder(params)
    loop = mel[..., :64]
    sound = vocoder.vocode(loop, circular=True, refine_iterations=0)
    refined = refine_to_mel(sound, loop, params, 2, 3, circular=True).roll(-HOP, -1)
    turned = [refine_to_mel(sound.roll(-HOP, -1), loop.roll(-1, -1), params, 2, 3, circular=True, first_frame=first)
              for first in (1, 0)]
    torch.testing.assert_close(turned[0], refined, rtol=0, atol=1e-6)
    assert float((turned[1] - refined).abs().max()) > 1e-2

    def distance(audio, target, circular):
        repeats = 3 if circular else 1  # a loop's mel measured on its middle period
        measured = waveform_to_mel(audio.repeat(1, repeats), params)
        start = target.shape[-1] if circular else 0
        return float((measured[..., start: start + target.shape[-1]] - target).norm() / target.norm())

    for frames, first, circular in ((2, 0, False), (3, 1, False), (4, 1, False), (3, 0, True), (5, 0, True)):
        piece = mel[..., 100: 100 + frames]
        raw = vocoder.vocode(piece, circular=circular, refine_iterations=0)
        out = refine_to_mel(raw, piece, params, 4, 8, circular=circular, first_frame=first)
        assert out.shape == raw.shape
        assert distance(out, piece, circular) < 0.6 * distance(raw, piece, circular), (frames, first, circular)


def test_same_seed_same_weights_and_round_trip(tmp_path, mel64):
    params, _, mel = mel64
    a, b, c = tiny_vocoder(params, 0), tiny_vocoder(params, 0), tiny_vocoder(params, 1)
    assert torch.equal(a.vocode(mel), b.vocode(mel))
    assert not torch.equal(a.vocode(mel), c.vocode(mel))
    a.save_pretrained(tmp_path / "v", safe_serialization=True)
    assert {p.name for p in (tmp_path / "v").iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors"}
    loaded = load_vocoder(tmp_path / "v")
    assert loaded.params == params and torch.equal(loaded.vocode(mel), a.vocode(mel))
    assert resolve_vocoder(tmp_path / "v").source == str(tmp_path / "v")


def test_bad_vocoders_give_clear_errors(tmp_path, mel64):
    params, _, _ = mel64
    vocoder = tiny_vocoder(params)
    with pytest.raises(SpectrodiffError, match=r"trained for 64 mel bins.*spectrogram has 512 mel bins"):
        vocoder.check_params(SpectrogramParams())
    vocoder.check_params(SpectrogramParams(num_frequencies=64, stereo=True))  # per channel: stereo is fine
    vocoder.save_pretrained(tmp_path / "v", safe_serialization=True)
    (tmp_path / "v" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SpectrodiffError, match="cannot load the vocoder"):
        load_vocoder(tmp_path / "v")
    with pytest.raises(SpectrodiffError, match="not a vocoder folder"):
        load_vocoder(tmp_path)
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    (tmp_path / "v" / "config.json").write_text(json.dumps(config | {"refine_iterations": -2}))
    with pytest.raises(SpectrodiffError, match=r"refine_iterations must be an integer in \[0, 100\], got -2"):
        load_vocoder(tmp_path / "v")
    with pytest.raises(SpectrodiffError, match="refine_iterations must be an integer"):
        vocoder.vocode(mel64[2], refine_iterations=-1)
    (tmp_path / "v" / "config.json").write_text(json.dumps(config | {"bass_refine_iterations": 101}))
    with pytest.raises(SpectrodiffError, match=r"bass_refine_iterations must be an integer in \[0, 100\], got 101"):
        load_vocoder(tmp_path / "v")
    odd = dict(SpectrogramParams(num_frequencies=64, padded_duration_ms=250).config)  # FFT 11025, window 4410
    with pytest.raises(SpectrodiffError, match="FFT size that is a multiple of the window, got 11025 and 4410"):
        VocoderComponent(spectrogram=odd, **SMALL, refine_iterations=2)
    assert VocoderComponent(spectrogram=odd, **SMALL).config.refine_iterations == 0  # without refinement it is fine
    with pytest.raises(SpectrodiffError, match="unknown vocoder 'nope'"):
        resolve_vocoder("nope")
    with pytest.raises(SpectrodiffError, match="no neural vocoder for 64 mel bins"):
        choose_vocoder("neural", params, None)
    assert choose_vocoder(None, params, None) is None and choose_vocoder("griffin-lim", params, vocoder) is None
    assert choose_vocoder(None, params, vocoder) is vocoder


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory) -> Path:
    """Six 2 s files (chords, drums, mixes) and two things that are not audio."""
    folder = tmp_path_factory.mktemp("audio")
    for n, kind in enumerate(("chord", "drums", "mix", "chord", "drums", "mix")):
        soundfile.write(folder / f"{kind}-{n}.wav", SIGNALS[kind](2.0, seed=n), 44100, subtype="PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF....not audio")
    (folder / "notes.txt").write_text("not audio")
    return folder


def write_config(path: Path, **training) -> Path:
    config = {"spectrogram": {"num_frequencies": 64}, "vocoder": SMALL,
              "training": {"batch_size": 4, "segment_frames": 16, "warmup_steps": 5, "checkpoint_every": 20,
                           "validate_every": 40, "lr": 2e-3} | training}
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.mark.slow
def test_a_short_training_run_learns_and_resumes(tmp_path, audio_folder, monkeypatch):
    config = write_config(tmp_path / "v.yaml")
    logs = []
    summary = train_vocoder(VocoderOptions([audio_folder], tmp_path / "run", config, max_steps=40, device="cpu",
                                           log=logs.append))
    assert any("skipped 1 unreadable" in line for line in logs)
    first, last = summary["val_stft"][0], summary["val_stft"][-1]
    assert last < 0.85 * first, summary["val_stft"]  # measured: 4.85 -> 3.79
    with (tmp_path / "run" / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(41)) and rows[-1]["val_stft"]
    assert sorted(p.name for p in (tmp_path / "run" / "validation" / "step-000040").iterdir())
    vocoder = load_vocoder(tmp_path / "run")
    assert vocoder.params == SpectrogramParams(num_frequencies=64)

    # A run killed after its step-20 checkpoint and resumed ends with the same weights as the run never stopped.
    save_checkpoint = core.save_checkpoint

    def killed_after(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(core, "save_checkpoint", killed_after)
    with pytest.raises(KeyboardInterrupt):
        train_vocoder(VocoderOptions([audio_folder], tmp_path / "split", config, max_steps=40, device="cpu",
                                     log=logs.append))
    monkeypatch.undo()
    train_vocoder(VocoderOptions([audio_folder], tmp_path / "split", config, max_steps=40, resume="latest",
                                 device="cpu", log=logs.append))
    resumed = load_vocoder(tmp_path / "split")
    for (name, x), (_, y) in zip(vocoder.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, msg=name)
    with pytest.raises(SpectrodiffError, match="not an empty folder"):
        train_vocoder(VocoderOptions([audio_folder], tmp_path / "split", config, device="cpu", log=logs.append))


@pytest.mark.slow
def test_two_processes_train_one_vocoder(tmp_path, audio_folder, launch):
    """`accelerate launch --num_processes 2 --cpu spectrodiff train-vocoder`: the validation distance falls and both
    processes end with the weights saved."""
    config = write_config(tmp_path / "v.yaml", validate_every=30)
    out = tmp_path / "run"
    result = launch("train-vocoder", audio_folder, "-o", out, "--config", config, "--max-steps", 30)
    assert result.returncode == 0, result.stdout + result.stderr
    digests = dict(re.findall(r"process (\d): final weights sha256 ([0-9a-f]{64})", result.stdout))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], result.stdout
    assert weights_digest({"vocoder": load_vocoder(out)}) == digests["0"]
    first, *_, last = [float(r["val_stft"]) for r in read_log(out) if r["val_stft"]]
    assert last < 0.9 * first, (first, last)


def test_adversarial_training_runs_both_networks(tmp_path, audio_folder):
    config = write_config(tmp_path / "v.yaml", adversarial_weight=1.0, adversarial_start=2, validate_every=100)
    summary = train_vocoder(VocoderOptions([audio_folder], tmp_path / "run", config, max_steps=4, device="cpu",
                                           log=lambda _: None))
    with (tmp_path / "run" / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [bool(r["adversarial"]) for r in rows[1:]] == [False, False, True, True]
    saved = (tmp_path / "run" / "checkpoints" / "step-000004")
    from safetensors.torch import load_file

    keys = load_file(str(saved / "trainable.safetensors"))
    assert any(k.startswith("discriminator.") for k in keys) and any(k.startswith("vocoder.") for k in keys)
    # accelerate's save_state: one state per optimizer and per schedule, in the order prepared (the vocoder's first).
    assert {p.name for p in saved.glob("*.bin")} == {"optimizer.bin", "optimizer_1.bin", "scheduler.bin",
                                                     "scheduler_1.bin"}
    counts = [len(torch.load(saved / name, weights_only=True)["param_groups"][0]["params"])
              for name in ("optimizer.bin", "optimizer_1.bin")]
    assert counts == [len(list(load_vocoder(tmp_path / "run").parameters())), len(list(
        MultiResolutionDiscriminator().parameters()))]
    assert summary["steps"] == 4


def test_train_vocoder_bad_input(tmp_path, audio_folder):
    (tmp_path / "empty").mkdir()
    result = invoke("train-vocoder", tmp_path / "empty", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "no audio files" in result.output and "Traceback" not in result.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"RIFF....")
    result = invoke("train-vocoder", tmp_path / "bad", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "none of the 1 audio files" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("training: {batch_size: 0}\n")
    result = invoke("train-vocoder", audio_folder, "-o", tmp_path / "out", "--config", bad)
    assert result.exit_code == 1 and "--batch-size must be between 1 and 4096, got 0" in result.output
    bad.write_text("vocoder: {dim: 8}\nextra: 1\n")
    result = invoke("train-vocoder", audio_folder, "-o", tmp_path / "out", "--config", bad)
    assert result.exit_code == 1 and "unknown field(s) extra" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def voiced_model(tmp_path_factory, pipe):
    """The tiny pipeline (64 bins) saved with a tiny vocoder as its `vocoder/` component."""
    folder = tmp_path_factory.mktemp("voiced")
    components = dict(pipe.components) | {"vocoder": tiny_vocoder(pipe.spectrogram)}
    SpectrodiffPipeline(**components).save_pretrained(folder, safe_serialization=True)
    return folder


def test_generation_through_each_vocoder(tmp_path, voiced_model, model_dir):
    pipe = SpectrodiffPipeline.load(str(voiced_model))
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.vocoder, VocoderComponent)
    outputs = {}
    for choice in (None, "griffin-lim", "neural", str(voiced_model / "vocoder")):
        result = make(pipe, GenerateJob(prompt="piano", seed=3, steps=2, vocoder=choice),
                      Output(tmp_path / f"{len(outputs)}.wav"))
        outputs[choice] = soundfile.read(result.audio)[0]
        assert result.record["vocoder"] == {None: "neural", "griffin-lim": "griffin-lim", "neural": "neural"}.get(
            choice, choice)
        assert result.record["job"].get("vocoder") == choice
    assert np.array_equal(outputs[None], outputs["neural"])
    assert np.array_equal(outputs["neural"], outputs[str(voiced_model / "vocoder")])
    assert not np.array_equal(outputs[None], outputs["griffin-lim"])
    # The neural loop wraps seamlessly too.
    assert loop_wrap_ratio(outputs["neural"].T, pipe.spectrogram) <= 1.0

    source = tmp_path / "source.wav"
    soundfile.write(source, SIGNALS["mix"](3.0, seed=4), 44100, subtype="PCM_16")
    extended = make(pipe, ExtendJob(audio=source, prompt="drums", seed=1, seconds=2.0, steps=2, vocoder="neural"),
                    Output(tmp_path / "ext.wav"))
    original = soundfile.read(source)[0]
    assert np.array_equal(soundfile.read(extended.audio)[0][: len(original)], original)
    job = InpaintJob(audio=source, prompt="drums", start=1.0, end=2.0, steps=2, vocoder="neural")
    filled = soundfile.read(make(pipe, job, Output(tmp_path / "inp.wav")).audio)[0]
    assert len(filled) == len(original) and np.array_equal(filled[:40000], original[:40000])

    # A model without a vocoder: the default stays Griffin-Lim, and a vocoder for other parameters is refused.
    plain = SpectrodiffPipeline.load(str(model_dir))
    plain.set_progress_bar_config(disable=True)
    result = make(plain, GenerateJob(prompt="piano", steps=2), Output(tmp_path / "plain.wav"))
    assert result.record["vocoder"] == "griffin-lim"
    tiny_vocoder(SpectrogramParams(num_frequencies=128)).save_pretrained(tmp_path / "v128")
    cli = invoke("generate", "piano", "--model", model_dir, "--steps", 2, "--vocoder", tmp_path / "v128", "-o",
                 tmp_path / "refused.wav")
    assert cli.exit_code == 1 and "trained for 128 mel bins" in cli.output and "has 64 mel bins" in cli.output
    assert not (tmp_path / "refused.wav").exists()
    cli = invoke("generate", "piano", "--model", voiced_model, "--steps", 2, "--vocoder", "neural", "-o",
                 tmp_path / "cli.wav")
    assert cli.exit_code == 0, cli.output


def test_image_to_audio_with_a_vocoder(tmp_path, mel64):
    params, audio, _ = mel64
    image = audio_to_image(audio.numpy()[None], params)
    vocoder = tiny_vocoder(params)
    neural, _ = image_to_audio(image, vocoder=vocoder)
    gl, _ = image_to_audio(image)
    assert neural.shape == gl.shape
    with pytest.raises(SpectrodiffError, match="trained for 64 mel bins"):
        image_to_audio(audio_to_image(audio.numpy()[None], SpectrogramParams()), vocoder=vocoder)
    vocoder.save_pretrained(tmp_path / "v")
    image.save(tmp_path / "t.png", exif=image.getexif())
    result = invoke("image-to-audio", tmp_path / "t.png", "-o", tmp_path / "t.wav", "--vocoder", tmp_path / "v")
    assert result.exit_code == 0, result.output
    written = soundfile.read(tmp_path / "t.wav")[0]
    # The same audio up to the command's loudness gain.
    gain = np.abs(written).max() / np.abs(neural).max()
    np.testing.assert_allclose(written, gain * neural[0], atol=2e-4)
