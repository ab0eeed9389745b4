"""SpectrodiffPipeline: components, loading (local folders, Riffusion's layout, pickles), and the latent mechanism
that makes long clips and loops seamless, on tiny random models built in code."""

import json
import shutil

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from typer.testing import CliRunner

from spectrodiff import SpectrodiffError, SpectrogramParams, image_params
from spectrodiff.cli import app
from spectrodiff.generation.pipeline import SpectrodiffPipeline, circular_time_axis, slerp, window_starts
from spectrodiff.generation.timeline import Keyframe, Timeline
from spectrodiff.testing import build_tiny_pipeline

KEY = Keyframe("jazzy saxophone", seed=1)



def test_saved_folder_round_trips(pipe, model_dir):
    assert (model_dir / "spectrogram" / "spectrogram_config.json").exists()
    assert list((model_dir / "unet").glob("*.safetensors"))
    loaded = SpectrodiffPipeline.load(str(model_dir))
    loaded.set_progress_bar_config(disable=True)
    assert loaded.spectrogram == pipe.spectrogram
    assert torch.equal(pipe.denoise(Timeline.single(KEY), 64, 4, loop=True),
                       loaded.denoise(Timeline.single(KEY), 64, 4, loop=True))


@pytest.fixture(scope="module")
def riffusion_layout(tmp_path_factory, model_dir):
    """The public checkpoint's layout: a StableDiffusionPipeline index with safety-checker entries and no
    spectrogram component (tiny weights)."""
    folder = tmp_path_factory.mktemp("riffusion") / "riffusion-model-v1"
    shutil.copytree(model_dir, folder)
    shutil.rmtree(folder / "spectrogram")
    index = json.loads((folder / "model_index.json").read_text())
    del index["spectrogram"]
    index.update({"_class_name": "StableDiffusionPipeline", "safety_checker": [None, None],
                  "feature_extractor": [None, None], "requires_safety_checker": False})
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_riffusion_layout_gets_riffusions_params(riffusion_layout):
    loaded = SpectrodiffPipeline.load(str(riffusion_layout))
    assert loaded.spectrogram == SpectrogramParams()
    assert loaded.latent_height == 512 // 8


def test_riffusion_layout_generates_from_the_cli(riffusion_layout, tmp_path):
    out = tmp_path / "riff.wav"
    result = CliRunner().invoke(app, ["generate", "funky piano", "--model", str(riffusion_layout), "--steps", "2",
                                      "--iters", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    image = Image.open(out.with_suffix(".png"))
    assert image.size == (512, 512) and image_params(image)[0] == SpectrogramParams()
    assert soundfile.info(out).frames == 512 * 441


def test_from_pretrained_fills_in_riffusions_params_and_calls_like_diffusers(riffusion_layout):
    """diffusers' own `from_pretrained` on Riffusion's layout (no spectrogram/ component) gets Riffusion's
    parameters; `pipe(prompt, ...)` returns audio, spectrogram images and the rate, deterministic for a generator;
    a plain clip is exactly the asked length, a loop whole latent columns."""
    pipe = SpectrodiffPipeline.from_pretrained(str(riffusion_layout))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.spectrogram == SpectrogramParams()

    def call(seed: int, **kwargs):
        return pipe("funky piano", num_inference_steps=2, generator=torch.Generator().manual_seed(seed),
                    vocoder="griffin-lim", **kwargs)

    out = call(0, seconds=1.0, loop=False)
    assert out.audios.shape == (1, 1, 44100) and out.sample_rate == 44100
    assert out.images[0].size == (104, 512) and image_params(out.images[0])[0] == SpectrogramParams()
    assert np.array_equal(out.audios, call(0, seconds=1.0, loop=False).audios)
    assert not np.array_equal(out.audios, call(1, seconds=1.0, loop=False).audios)
    assert call(0, seconds=1.0).audios.shape == (1, 1, 96 * 441)  # a loop: 12 columns of 8 frames
    batch = pipe(["a", "b"], num_inference_steps=1, seconds=0.5, output_type="pt", vocoder="griffin-lim")
    assert isinstance(batch.audios, torch.Tensor) and batch.audios.shape[0] == 2 and len(batch.images) == 2
    assert pipe("a", num_inference_steps=1, seconds=0.5, output_type="latent").shape == (1, 4, 64, 6)


@pytest.mark.parametrize("module", ["spectrodiff.params", "spectrodiff.generation.components"])
def test_folders_naming_the_components_old_classes_still_load(tmp_path, model_dir, module):
    """Folders saved before the components had names of their own name SpectrogramParams and NeuralVocoder, in
    spectrodiff.generation.components or (before the package had subfolders) spectrodiff.params and
    spectrodiff.vocoder: they load as the components, and the old import paths still work. A folder saved now
    names the components themselves."""
    import spectrodiff.params
    import spectrodiff.vocoder
    from spectrodiff.generation import components
    from spectrodiff.generation.components import SpectrogramComponent, VocoderComponent

    folder = tmp_path / "old"
    shutil.copytree(model_dir, folder)
    VocoderComponent(spectrogram=SpectrogramParams(num_frequencies=64).to_dict(), dim=16, intermediate_dim=32,
                     num_layers=1).save_pretrained(folder / "vocoder")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["spectrogram"] == ["spectrodiff.generation.components", "SpectrogramComponent"]
    index["spectrogram"] = [module, "SpectrogramParams"]
    index["vocoder"] = [module.replace("params", "vocoder"), "NeuralVocoder"]
    (folder / "model_index.json").write_text(json.dumps(index))
    for config in (folder / "spectrogram" / "spectrogram_config.json", folder / "vocoder" / "config.json"):
        config.write_text(config.read_text().replace("SpectrogramComponent", "SpectrogramParams")
                          .replace("VocoderComponent", "NeuralVocoder"))
    for loaded in (SpectrodiffPipeline.load(str(folder)), SpectrodiffPipeline.from_pretrained(str(folder))):
        assert type(loaded.spectrogram) is SpectrogramComponent
        assert loaded.spectrogram == SpectrogramParams(num_frequencies=64)
        assert type(loaded.vocoder) is VocoderComponent and loaded.vocoder.params == loaded.spectrogram
    assert spectrodiff.params.SpectrogramParams is components.SpectrogramParams is SpectrogramComponent
    assert spectrodiff.vocoder.NeuralVocoder is components.NeuralVocoder is VocoderComponent
    assert spectrodiff.vocoder.resolve_vocoder(folder).params == loaded.spectrogram
    with pytest.raises(AttributeError):
        components.NoSuchComponent  # noqa: B018 (only the renamed classes resolve)


def test_pickled_weights_are_refused_unless_allowed(tmp_path, pipe):
    pipe.save_pretrained(tmp_path, safe_serialization=False)
    assert list((tmp_path / "unet").glob("*.bin"))
    with pytest.raises(SpectrodiffError, match="--allow-pickle"):
        SpectrodiffPipeline.load(str(tmp_path))
    assert SpectrodiffPipeline.load(str(tmp_path), allow_pickle=True).spectrogram == pipe.spectrogram


def test_missing_component_is_named(tmp_path, model_dir):
    shutil.copytree(model_dir, tmp_path / "m")
    shutil.rmtree(tmp_path / "m" / "vae")
    with pytest.raises(SpectrodiffError, match="missing its vae/ component"):
        SpectrodiffPipeline.load(str(tmp_path / "m"))


@pytest.mark.parametrize("model, message", [
    ("no-such-model", r"unknown model 'no-such-model': not a folder, not a bundled model \(mini\)"),
    ("./missing/folder", "no such folder"),
    ("a/b/c", "not a hub id"),
])
def test_unknown_models_say_what_was_tried(model, message):
    with pytest.raises(SpectrodiffError, match=message):
        SpectrodiffPipeline.load(model)


def test_hub_id_offline_is_a_clean_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpectrodiffError, match="cannot load model 'riffusion/riffusion-model-v1'"):
        SpectrodiffPipeline.load("riffusion/riffusion-model-v1")


def test_half_precision_needs_cuda(model_dir):
    with pytest.raises(SpectrodiffError, match="needs a CUDA device"):
        SpectrodiffPipeline.load(str(model_dir), dtype=torch.float16)


def test_other_text_encoders_work():
    bert = build_tiny_pipeline(text_encoder="bert")
    a = bert.denoise(Timeline.single(KEY), 64, 3)
    b = bert.denoise(Timeline.single(Keyframe("electronic beats", seed=1)), 64, 3)
    assert a.shape == (1, 4, 8, 64) and not torch.equal(a, b), "the prompt must reach the UNet"


def test_long_prompt_is_truncated_with_a_warning(pipe):
    with pytest.warns(UserWarning, match="truncated"):
        hidden = pipe.encode_text(["saxophone " * 40])
    assert hidden.shape == (1, 77, 32)


def test_same_seed_same_latents_other_seed_differs(pipe):
    a = pipe.denoise(Timeline.single(KEY), 80, 4)
    assert torch.equal(a, pipe.denoise(Timeline.single(KEY), 80, 4))
    assert not torch.equal(a, pipe.denoise(Timeline.single(Keyframe(KEY.prompt, seed=2)), 80, 4))


def test_single_tile_loop_is_circular(pipe, monkeypatch):
    """With circular convolutions the denoiser is shift-equivariant in time: rolled noise gives rolled latents,
    which is what makes the loop's end meet its start."""
    noise = pipe.initial_noise(Timeline.single(KEY), 64)
    monkeypatch.setattr(pipe, "initial_noise", lambda timeline, width: noise)
    plain = pipe.denoise(Timeline.single(KEY), 64, 4, loop=True)
    monkeypatch.setattr(pipe, "initial_noise", lambda timeline, width: noise.roll(16, dims=-1))
    rolled = pipe.denoise(Timeline.single(KEY), 64, 4, loop=True)
    torch.testing.assert_close(rolled, plain.roll(16, dims=-1), rtol=1e-4, atol=1e-4)
    monkeypatch.undo()
    assert not torch.allclose(pipe.denoise(Timeline.single(KEY), 64, 4, loop=False).roll(16, dims=-1),
                              pipe.denoise(Timeline.single(KEY), 64, 4, loop=False), atol=1e-3)


def test_circular_patch_is_undone(pipe):
    x = torch.randn(1, 4, 8, 64)
    conv = pipe.unet.conv_in
    before = conv(x)
    with circular_time_axis(pipe.unet):
        assert not torch.allclose(conv(x), before)
    torch.testing.assert_close(conv(x), before)


@pytest.mark.parametrize("width", [64, 65, 100, 150, 640])
@pytest.mark.parametrize("loop", [False, True])
def test_every_join_lies_inside_some_window(width, loop):
    """No pair of neighbouring columns is denoised only by different windows: joins share latent context."""
    tile = min(64, width)
    starts = window_starts(width, tile, loop)
    covered = np.zeros(width, dtype=bool)
    pairs = set()
    for s in starts:
        cols = [(s + i) % width for i in range(tile)]
        covered[cols] = True
        pairs.update((cols[i], cols[i + 1]) for i in range(tile - 1))
    assert covered.all()
    joins = [(c, c + 1) for c in range(width - 1)] + ([(width - 1, 0)] if loop and width > tile else [])
    assert all(pair in pairs for pair in joins)


def test_multi_tile_loop_wraps_its_windows():
    starts = window_starts(200, 64, loop=True)
    assert any(s + 64 > 200 for s in starts), "a window must straddle the loop's wrap point"


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(4, 8, 10), torch.randn(4, 8, 10)
    torch.testing.assert_close(slerp(a, b, torch.zeros(10)), a)
    torch.testing.assert_close(slerp(a, b, torch.ones(10)), b)
    middle = slerp(a, b, torch.full((10,), 0.5))
    assert abs(float(middle.norm() / a.norm()) - 1) < 0.1, "slerp keeps noise at unit scale, a lerp would not"


def test_morph_blends_along_time(pipe):
    timeline = Timeline.morph([Keyframe("a", seed=1), Keyframe("b", seed=2), Keyframe("c", seed=3)], 10.0)
    index, alpha = timeline.blend_at(np.array([0.0, 2.5, 5.0, 7.5, 10.0]))
    assert list(index) == [0, 0, 1, 1, 1] and list(alpha) == [0.0, 0.5, 0.0, 0.5, 1.0]
    noise = pipe.initial_noise(timeline, 125)
    first = torch.randn((4, 8, 125), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(noise[0, ..., 0], first[..., 0], atol=0.05, rtol=0.05)


def test_compose_holds_each_keyframe_then_blends():
    keyframes = [Keyframe("a", seconds=10), Keyframe("b", seconds=10), Keyframe("c", seconds=5)]
    timeline = Timeline.compose(keyframes, transition=2.0)
    assert timeline.duration == 25
    index, alpha = timeline.blend_at(np.array([5.0, 9.0, 10.0, 11.0, 15.0, 22.0]))
    position = index + alpha
    np.testing.assert_allclose(position, [0, 0, 0.5, 1, 1, 2])
    assert Timeline.compose(keyframes, 2.0).lerp("guidance", np.array([3.0]))[0] == 7.0


# ---- one text-to-audio path -------------------------------------------------------------------------------------

STYLES = {"techno": {"captions": ["techno", "hard techno beat"], "tempo": [130, 138], "meter": "4/4",
                     "modes": ["minor"]}}


@pytest.fixture(scope="module")
def conditioned_dir(tmp_path_factory):
    """A tiny pipeline with musical conditions and a table of styles (so that it picks a tempo, and a key by the
    seed), saved as a folder."""
    from spectrodiff.training.train import add_music_conditioning

    pipe = build_tiny_pipeline()
    add_music_conditioning(pipe)
    torch.manual_seed(1)
    torch.nn.init.normal_(pipe.unet.class_embedding.linear_2.weight, std=0.5)  # so that the conditions matter
    pipe.register_to_config(music_styles=STYLES)
    folder = tmp_path_factory.mktemp("conditioned")
    pipe.save_pretrained(folder)
    return folder


def test_pipe_and_generate_make_the_same_samples(conditioned_dir, tmp_path):
    """`pipe(prompt, generator=seeded(s))` with its defaults and `spectrodiff generate PROMPT --seed s` with its
    defaults make the same clip: the same picked tempo and key (drawn by the seed: 5 picks Ab minor, 0 would pick A
    minor), the same whole bars, the same samples and spectrogram. The control: another seed differs."""
    pipe = SpectrodiffPipeline.load(str(conditioned_dir))
    pipe.set_progress_bar_config(disable=True)

    def cli(seed: int) -> tuple[np.ndarray, dict, np.ndarray]:
        out = tmp_path / f"cli-{seed}.wav"
        result = CliRunner().invoke(app, ["generate", "techno", "--model", str(conditioned_dir), "--seed", str(seed),
                                          "-o", str(out)])
        assert result.exit_code == 0, result.output
        sidecar = json.loads(out.with_suffix(".json").read_text())
        return soundfile.read(out, dtype="int16")[0], sidecar, np.asarray(Image.open(out.with_suffix(".png")))

    def python(seed: int):
        out = pipe("techno", generator=torch.Generator().manual_seed(seed))
        path = tmp_path / f"pipe-{seed}.wav"
        soundfile.write(path, out.audios[0].T, out.sample_rate)  # as the README writes it
        return out, soundfile.read(path, dtype="int16")[0]

    samples, sidecar, image = cli(5)
    out, written = python(5)
    assert sidecar["music"] == out.music[0].to_dict() and out.music[0].key == "Ab minor"
    assert sidecar["music"] != pipe.resolve_music("techno", 0).to_dict()  # seed 0 picks another key
    beats, bpm = sidecar["tempo"]["beats"], sidecar["tempo"]["bpm"]
    assert len(samples) == round(beats * 60 / bpm * 44100) == out.audios.shape[-1]  # whole bars, to the sample
    assert out.seconds[0] == pytest.approx(sidecar["seconds"]) and out.sample_rate == sidecar["sample_rate"]
    assert np.array_equal(written, samples)
    assert np.array_equal(np.asarray(out.images[0]), image)
    other, _ = python(6)
    assert other.music[0].key != out.music[0].key
    assert not np.array_equal(other.audios, out.audios)


def test_an_unseeded_generator_gives_its_seed_wrapped_to_32_bits(pipe):
    """`torch.Generator()` starts from a 64-bit default seed: pipe() takes it wrapped to the job's 32 bits (as the
    server wraps the seeds Riffusion's app sends) instead of refusing it. The controls: that 32-bit seed itself gives
    the same latents, the next seed other ones."""
    unseeded = torch.Generator()
    wrapped = unseeded.initial_seed() % 2**32
    assert unseeded.initial_seed() >= 2**32

    def latents(generator: torch.Generator) -> torch.Tensor:
        return pipe("x", num_inference_steps=2, seconds=0.64, generator=generator, output_type="latent")

    first = latents(unseeded)
    assert torch.equal(first, latents(torch.Generator().manual_seed(wrapped)))
    assert not torch.equal(first, latents(torch.Generator().manual_seed(wrapped + 1)))
