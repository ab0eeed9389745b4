"""The bundled `mini` model: it ships inside the package, loads offline, and generates deterministically."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from spectrodiff.bundled import MODELS_DIR as BUNDLED_MODELS_DIR
from spectrodiff.cli import DEFAULT_MODEL, app
from spectrodiff.generation.jobs import GenerateJob
from spectrodiff.generation.modes import make
from spectrodiff.generation.output import Output
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.training.bundle import BUNDLE_LIMIT_MB, folder_megabytes

MINI = BUNDLED_MODELS_DIR / "mini"
FAST = dict(steps=6, iters=8)


@pytest.fixture(scope="module")
def mini() -> SpectrodiffPipeline:
    pipe = SpectrodiffPipeline.load("mini")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def digest(path) -> str:
    return hashlib.sha256(soundfile.read(path, dtype="int16")[0].tobytes()).hexdigest()


def test_mini_is_the_default_and_fits_the_repository():
    assert DEFAULT_MODEL == "mini"
    assert folder_megabytes(MINI) <= BUNDLE_LIMIT_MB
    weights = [p for p in MINI.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt", ".pt", ".pth")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    card = (MINI / "README.md").read_text()
    for topic in ("Trained on", "Limits", "adherence", "benchmarks/mini.py", "benchmarks/music.py"):
        assert topic in card, topic


def test_mini_takes_tempo_and_key_and_knows_the_catalogue_styles(mini):
    from spectrodiff.training.catalogue import STYLES

    assert mini.music_conditioned
    assert set(mini.config.music_styles) == {s.name for s in STYLES}
    for style in STYLES:
        assert mini.style_of(style.name) == style.name
        picked = mini.resolve_music(style.name, 0)
        assert style.tempo[0] <= picked.bpm <= style.tempo[1] and picked.meter == f"{style.meter}/4"


def test_mini_loads_offline_with_its_own_parameters(mini):
    assert type(mini.text_encoder).__name__ == "BertModel"  # the pretrained MiniLM sentence encoder
    assert mini.text_encoder.config.hidden_size == mini.unet.config.cross_attention_dim == 384
    assert mini.spectrogram.num_frequencies == 128 and mini.spectrogram.sample_rate == 44100
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in mini.unet.parameters())  # float32 on CPU


def test_mini_generates_a_loop_deterministically(mini, tmp_path):
    def run(seed: int, name: str):
        return make(mini, GenerateJob(prompt="jazzy saxophone", seed=seed, **FAST), Output(tmp_path / name))

    first, again, other = run(0, "a.wav"), run(0, "b.wav"), run(1, "c.wav")
    audio, rate = soundfile.read(first.audio)
    tempo = first.record["tempo"]  # mini picks a tempo: the whole bars nearest 5.12 s, to the sample
    assert rate == 44100 and len(audio) == round(tempo["beats"] * 60 / tempo["bpm"] * rate) and tempo["loop"]
    assert abs(audio).max() > 0.05  # not silence
    assert digest(first.audio) == digest(again.audio)
    assert digest(first.audio) != digest(other.audio)


def test_mini_refines_its_encodings_of_input_audio(mini):
    """mini's model_index.json sets 5 encode steps: a tile of a sound it never trained on (a synthetic mix) comes back
    through the VAE at least 15 % closer than from the encoder alone."""
    from spectrodiff.codec.convert import audio_to_pixels
    from spectrodiff.generation.pipeline import magnitude_convergence
    from spectrodiff.signals import mix

    assert mini.config.encode_steps == 5
    pixels = audio_to_pixels(mix(8.0)[None], mini.spectrogram.at_tempo(120), 512)[0]  # 16 beats at 120 BPM

    def convergence(steps: int) -> float:
        decoded = next(mini.decode_latents(mini.encode_image(pixels, steps)))[1]
        return float(magnitude_convergence(decoded * 2 - 1, pixels * 2 - 1, mini.spectrogram.power_for_image))

    assert convergence(5) < 0.85 * convergence(0)


def test_cli_generates_with_the_bundled_model_by_default(tmp_path):
    out = tmp_path / "sax.wav"
    result = CliRunner().invoke(app, ["generate", "smooth sax solo", "-o", str(out), "--steps", "4", "--iters", "4"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".png").is_file() and out.with_suffix(".json").is_file()


def test_mini_speaks_through_its_own_vocoder(mini):
    """mini carries its neural vocoder as its `vocoder/` component (spectrodiff/models/mini/vocoder): it is the default
    (it beats Griffin-Lim on the vocoder benchmark's three bars and on mini's own, see docs/benchmarks.md),
    `--vocoder mini` names it, and `--vocoder griffin-lim` still turns it off."""
    from spectrodiff.generation.components import VocoderComponent
    from spectrodiff.training.bundle import VOCODER_LIMIT_MB
    from spectrodiff.vocoding.registry import choose_vocoder, resolve_vocoder

    folder = MINI / "vocoder"
    assert folder_megabytes(folder) <= VOCODER_LIMIT_MB
    assert {p.suffix for p in folder.iterdir()} == {".json", ".safetensors"}
    # mini's time axis is in beats; its vocoder hears the same mel bands in clock time, columns re-timed to 10 ms
    assert isinstance(mini.vocoder, VocoderComponent) and mini.vocoder.params == mini.spectrogram.clock()
    assert choose_vocoder(None, mini.spectrogram, mini.vocoder) is mini.vocoder
    assert choose_vocoder("neural", mini.spectrogram, mini.vocoder) is mini.vocoder
    assert choose_vocoder("griffin-lim", mini.spectrogram, mini.vocoder) is None
    assert resolve_vocoder("mini").source == str(folder)


@pytest.mark.parametrize("name, bins", [("mini", 128), ("riffusion", 512)])
def test_the_bundled_vocoders_keep_level_and_beat_griffin_lim_on_a_mix(name, bins):
    """Each bundled vocoder: safetensors within 30 MB, found by its parameters, the input's loudness kept, and a
    lower multi-resolution STFT distance than Griffin-Lim on a mix of chords and drums it never heard (the real
    benchmark, on recordings, is benchmarks/vocoder.py)."""
    import torch

    from spectrodiff import SpectrogramParams
    from spectrodiff.bundled import VOCODERS_DIR as BUNDLED_VOCODERS_DIR
    from spectrodiff.codec.mel import waveform_to_mel
    from spectrodiff.metrics import mel_spectral_convergence, multi_resolution_stft_distance
    from spectrodiff.signals import mix
    from spectrodiff.training.bundle import VOCODER_LIMIT_MB
    from spectrodiff.vocoding.reconstruct import mel_to_waveform
    from spectrodiff.vocoding.registry import choose_vocoder

    folder = BUNDLED_MODELS_DIR / "mini" / "vocoder" if name == "mini" else BUNDLED_VOCODERS_DIR / name
    assert folder_megabytes(folder) <= VOCODER_LIMIT_MB
    params = SpectrogramParams(num_frequencies=bins, stereo=False)
    vocoder = choose_vocoder("neural", params, None)
    assert vocoder.source == str(folder)
    audio = torch.from_numpy(mix(3.0, seed=5))
    mel = waveform_to_mel(audio[None], params)
    neural, griffin_lim = vocoder.vocode(mel)[0], mel_to_waveform(mel, params)[0]
    assert 0.7 < float(neural.std() / audio[: len(neural)].std()) < 1.4
    assert multi_resolution_stft_distance(audio, neural) < 0.75 * multi_resolution_stft_distance(audio, griffin_lim)
    # Its mel-consistency refinement is on, and pulls the mel well back towards the input's.
    network = vocoder.vocode(mel, refine_iterations=0, bass_refine_iterations=0)[0]
    assert vocoder.config.refine_iterations > 0
    assert mel_spectral_convergence(audio, neural, params) < 0.7 * mel_spectral_convergence(audio, network, params)


def test_the_vocoders_folder_is_not_a_model():
    """Bundled vocoders live in spectrodiff/models/vocoders/; only folders with a model_index.json are models."""
    from spectrodiff import SpectrodiffError
    from spectrodiff.generation.pipeline import resolve_model

    with pytest.raises(SpectrodiffError, match=r"not a bundled model \(mini\)"):
        resolve_model("vocoders")


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python example, as written, makes the same sax.wav as the command beside it: the whole bars
    of mini's pick of tempo nearest 10 s, sample for sample."""
    import json
    import shlex

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    command = next(line for line in readme.splitlines() if line.startswith('spectrodiff generate "jazzy saxophone"'))
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    (tmp_path / "cli").mkdir()
    monkeypatch.chdir(tmp_path / "cli")
    result = CliRunner().invoke(app, shlex.split(command, comments=True)[1:])
    assert result.exit_code == 0, result.output
    audio, rate = soundfile.read(tmp_path / "sax.wav")
    tempo = json.loads((tmp_path / "cli" / "sax.json").read_text())["tempo"]
    assert rate == 44100 and len(audio) == round(tempo["beats"] * 60 / tempo["bpm"] * rate)
    assert np.abs(audio).max() > 0.05
    assert digest(tmp_path / "sax.wav") == digest(tmp_path / "cli" / "sax.wav")
