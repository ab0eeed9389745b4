"""Musical conditions (spectrodiff/generation/conditions.py): the feature vector, tempo and key from words or the
model's pick, a UNet that takes them (added to a trained model without changing it), training on labelled crops,
and the sidecar's record of the music a clip followed."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.conditions import MUSIC_FEATURES, Music, MusicTable, label_key, music_features, words_music
from spectrodiff.generation.jobs import GenerateJob, Keyframe
from spectrodiff.generation.modes import make
from spectrodiff.generation.output import Output
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.generation.timeline import Timeline
from spectrodiff.signals import drums
from spectrodiff.testing import build_tiny_pipeline
from spectrodiff.training.prepare import prepare_dataset
from spectrodiff.training.train import TrainOptions, add_music_conditioning, crop_music, load_dataset, train

STYLES = {"lo-fi hip hop": {"captions": ["lofi hip hop beat", "chill lofi beats to study to"], "tempo": [70, 90],
                            "meter": "4/4", "modes": ["dorian"]},
          "waltz": {"captions": ["a viennese waltz", "ballroom waltz with strings"], "tempo": [90, 180],
                    "meter": "3/4", "modes": ["major"]}}


@pytest.fixture(scope="module")
def conditioned() -> SpectrodiffPipeline:
    """A tiny pipeline given musical conditions, its embedding's last layer made non-zero so they matter."""
    pipe = build_tiny_pipeline()
    add_music_conditioning(pipe)
    torch.manual_seed(1)
    torch.nn.init.normal_(pipe.unet.class_embedding.linear_2.weight, std=0.5)
    pipe.register_to_config(music_styles=STYLES)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- features -------------------------------------------------------------------------------------------------


def test_features_say_what_is_known_and_tell_tempi_keys_and_phases_apart():
    assert music_features(None).shape == (MUSIC_FEATURES,) and not music_features(None).any()
    slow, fast = music_features(Music(80)), music_features(Music(160))
    assert slow[0] == fast[0] == 1 and slow[8] == 0  # tempo known, key not
    assert np.linalg.norm(slow - fast) > 0.5
    assert np.linalg.norm(music_features(Music(120)) - music_features(Music(121))) < 0.1  # nearby tempi stay near
    minor, major = music_features(Music(None, "F minor")), music_features(Music(None, "F major"))
    assert minor[8] == 1 and minor[0] == 0 and minor[13] == 1 and major[13] == -1
    assert np.allclose(minor[9:13], major[9:13])
    half = music_features(Music(120), bar_phase=0.5)
    assert half[16:18] == pytest.approx([0, -1], abs=1e-6)  # half a bar: sine 0, cosine -1
    assert half[18:20] == pytest.approx([0, 1], abs=1e-6)  # two whole beats of 4/4
    assert music_features(Music(120, meter="3/4"))[15] == pytest.approx(-0.25)


def test_modes_are_heard_as_major_or_minor():
    assert label_key("D", "dorian") == "D minor" and label_key("E", "phrygian") == "E minor"
    assert label_key("G", "mixolydian") == "G major"


@pytest.mark.parametrize(("prompt", "expected"), [
    ("lo-fi hip hop at 84 BPM in F minor", (84.0, "F minor")),
    ("techno, 132bpm", (132.0, None)),
    ("a waltz in Eb major", (None, "Eb major")),
    ("a saxophone in a late night jazz club", (None, None)),  # "in a" is not a key
    ("gabber at 300 bpm", (None, None)),  # out of range: left to the model
])
def test_tempo_and_key_are_read_from_words(prompt, expected):
    assert words_music(prompt) == expected


def test_table_picks_a_typical_tempo_and_a_seeded_key():
    table = MusicTable.from_dict({"styles": STYLES})
    picks = [table.pick("lo-fi hip hop", seed) for seed in range(12)]
    assert {p.bpm for p in picks} == {80.0} and {(p.source, p.key_source) for p in picks} == {("model", "model")}
    assert len({p.key for p in picks}) > 3 and all(p.key.endswith("minor") for p in picks)  # dorian is minor
    assert table.pick("waltz", 0).meter == "3/4"
    assert table.pick("waltz", 5) == table.pick("waltz", 5)
    with pytest.raises(SpectrodiffError, match="not a table of styles"):
        MusicTable.from_dict({"styles": {"x": {"captions": []}}})


# ---- the UNet -------------------------------------------------------------------------------------------------


def test_adding_conditions_keeps_the_model_exactly_as_it_was():
    pipe = build_tiny_pipeline()
    latents = torch.randn(2, 4, 8, 16, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_text(["piano", "drums"])
    before = pipe.unet(latents, 500, encoder_hidden_states=text).sample
    add_music_conditioning(pipe)
    assert pipe.music_conditioned
    labels = torch.from_numpy(np.stack([music_features(Music(90, "A minor")), music_features(None)]))
    after = pipe.unet(latents, 500, encoder_hidden_states=text, class_labels=labels).sample
    assert torch.equal(before, after)
    unet = pipe.unet
    add_music_conditioning(pipe)  # a no-op the second time
    assert pipe.unet is unet


def test_a_conditioned_model_saves_loads_and_follows_the_tempo(conditioned, tmp_path):
    conditioned.save_pretrained(tmp_path / "model")
    loaded = SpectrodiffPipeline.load(str(tmp_path / "model"))
    assert loaded.music_conditioned and loaded.config.music_styles == STYLES
    loaded.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 4, 8, 32, generator=torch.Generator().manual_seed(0))

    def run(music):
        return loaded.denoise(Timeline.single(Keyframe("drums"), music), 32, 4, loop=True, noise=noise.clone())

    slow, same, fast = run(Music(80)), run(Music(80)), run(Music(160))
    assert torch.equal(slow, same)
    assert (slow - fast).abs().mean() > 1e-3  # the control: the tempo reaches the UNet


def test_an_unconditioned_model_ignores_music(tmp_path):
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    assert not pipe.music_conditioned and pipe.resolve_music("drums at 120 BPM", 0) is None
    assert pipe.resolve_music("drums", 0, bpm=100).source == "asked"  # the length still follows an asked tempo
    noise = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0))
    a = pipe.denoise(Timeline.single(Keyframe("drums"), Music(80)), 16, 3, loop=True, noise=noise.clone())
    b = pipe.denoise(Timeline.single(Keyframe("drums"), Music(160)), 16, 3, loop=True, noise=noise.clone())
    assert torch.equal(a, b)


def test_music_comes_from_the_job_then_the_words_then_the_model(conditioned):
    asked = conditioned.resolve_music("lofi hip hop beat at 84 BPM", 0, bpm=100, key="C major")
    assert (asked.bpm, asked.key, asked.source, asked.key_source) == (100, "C major", "asked", "asked")
    said = conditioned.resolve_music("lofi hip hop beat at 84 BPM", 0)
    assert said.bpm == 84 and said.source == "words"
    assert said.key.endswith("minor") and said.key_source == "model"  # the key is still picked, from its style
    picked = conditioned.resolve_music("a viennese waltz", 3)
    assert picked.source == "model" and 90 <= picked.bpm <= 180 and picked.meter == "3/4"
    assert conditioned.style_of("chill lofi beats") == "lo-fi hip hop"


def test_the_sidecar_records_the_music_a_clip_followed(conditioned, tmp_path):
    result = make(conditioned, GenerateJob(prompt="ballroom waltz", seed=2, steps=2, iters=2), Output(tmp_path))
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["music"]["source"] == "model" and sidecar["music"]["meter"] == "3/4"
    assert sidecar["job"]["bpm"] is None  # the job, rerun, picks the same again
    asked = make(conditioned, GenerateJob(prompt="drums", seed=2, steps=2, iters=2, bpm=120, bars=1,
                                          key="A minor"), Output(tmp_path / "asked"))
    music = json.loads(asked.sidecar.read_text())["music"]
    assert music == {"bpm": 120, "key": "A minor", "meter": "4/4", "source": "asked", "key_source": "asked"}
    assert soundfile.info(asked.audio).frames == 88200  # one bar of 4/4 at 120 BPM


# ---- training -------------------------------------------------------------------------------------------------


def labelled_dataset(root: Path) -> Path:
    """Drum loops at two tempi with catalogue.json labels, prepared into 1.28 s tiles."""
    catalogue = root / "catalogue"
    files = []
    for i, bpm in enumerate((90, 150)):
        path = catalogue / f"beat_{bpm}" / f"beat_{bpm}_000.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, drums(4.0, bpm=bpm, seed=i), 44100, subtype="PCM_16")
        path.with_suffix(".txt").write_text(f"drum beat at {bpm}\n")
        files.append({"file": f"beat_{bpm}/beat_{bpm}_000.wav", "tempo": bpm, "key": "C dorian", "meter": "4/4"})
    (catalogue / "catalogue.json").write_text(json.dumps({"files": files, "styles": STYLES}))
    prepare_dataset(catalogue, root / "dataset", seconds=1.28, hop=0.64, validation=0, n_mels=64)  # the tiny base's
    return root / "dataset"


def without_progressions(styles: dict) -> dict:
    return {name: {k: v for k, v in entry.items() if k != "progressions"} for name, entry in styles.items()}


def test_crops_carry_their_bar_phase(tmp_path):
    dataset = load_dataset(labelled_dataset(tmp_path))
    assert without_progressions(dataset.music_styles) == STYLES
    # Each style's chord progressions in its modes, a chord a bar above the tonic (waltz: I IV V7 I and the like).
    assert all(len(chord) >= 3 for chord in dataset.music_styles["waltz"]["progressions"]["major"][0])
    item = next(i for i in dataset.train if i["music"]["tempo"] == 90.0 and i["music"]["bar_phase"] == 0.0)
    bar_pixels = 4 * 60 / 90 * 100  # 10 ms columns
    features = crop_music([item, item, item], [0, round(bar_pixels / 2), round(bar_pixels)], dataset.params)
    assert features[0, 16:18].tolist() == pytest.approx([0, 1], abs=1e-6)
    assert features[1, 16:18].tolist() == pytest.approx([0, -1], abs=0.02)
    assert features[2, 16:18].tolist() == pytest.approx([0, 1], abs=0.02)
    assert features[0, 13] == 1  # C dorian is minor
    unlabelled = crop_music([{"path": item["path"], "text": "x", "music": None}], [0], dataset.params)
    assert not unlabelled.any()


def test_training_with_conditions_learns_the_embedding_and_keeps_the_styles(tmp_path):
    dataset = labelled_dataset(tmp_path)
    base = tmp_path / "base"
    build_tiny_pipeline().save_pretrained(base)
    config = tmp_path / "music.yaml"
    config.write_text(yaml.safe_dump({"base": str(base), "music_conditioning": True,
                                      "training": {"max_steps": 4, "batch_size": 2, "lr": 1e-3,
                                                   "checkpoint_every": 4, "validate_every": 4}}))
    train(TrainOptions(dataset=dataset, out=tmp_path / "out", config=config, validation_steps=2,
                       validation_iters=2, log=lambda _: None))
    model = SpectrodiffPipeline.load(str(tmp_path / "out"))
    assert model.music_conditioned and without_progressions(model.config.music_styles) == STYLES
    assert model.unet.class_embedding.linear_2.weight.abs().sum() > 0  # it started at zero
    assert math.isfinite(float(model.unet.class_embedding.linear_2.weight.detach().sum()))


def test_the_diffusers_call_takes_a_tempo(conditioned):
    generator = torch.Generator().manual_seed(0)
    slow = conditioned("drums", num_inference_steps=2, seconds=0.64, generator=generator, bpm=80,
                       output_type="latent")
    fast = conditioned("drums", num_inference_steps=2, seconds=0.64, generator=torch.Generator().manual_seed(0),
                       bpm=160, output_type="latent")
    # Whole bars at the asked tempo, as `spectrodiff generate` makes them: one bar at 80 BPM lasts twice one at 160.
    assert slow.shape[-1] == 2 * fast.shape[-1], (slow.shape, fast.shape)


def test_generate_says_which_tempo_and_key_it_played(conditioned, tmp_path):
    from typer.testing import CliRunner

    from spectrodiff.cli import app

    conditioned.save_pretrained(tmp_path / "model")
    result = CliRunner().invoke(app, ["generate", "a viennese waltz", "--model", str(tmp_path / "model"), "-o",
                                      str(tmp_path / "out"), "--steps", "2", "--iters", "2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    picked = conditioned.resolve_music("a viennese waltz", 4)
    assert f"({picked.bpm:g} BPM picked by the model, {picked.key} picked by the model)" in result.output
