"""Music in beat time (issue 28): chord symbols, conditions aligned with the columns, a beat-time model that takes
them (generation and training), and beat-time tiles of a labelled catalogue."""

import json

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image

from spectrodiff.codec.image import image_params
from spectrodiff.codec.mel import waveform_to_mel
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.harmony import (
    ALIGNED_CHANNELS,
    CHORD_CHANNELS,
    POSITION_CHANNELS,
    aligned_conditions,
    chord_layout,
    chord_name,
    fit_chords,
    key_of_chords,
    parse_chord,
    parse_chords,
    without_chords,
)
from spectrodiff.generation.jobs import GenerateJob
from spectrodiff.generation.modes import make
from spectrodiff.generation.output import Output
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.signals import drums
from spectrodiff.testing import build_tiny_pipeline
from spectrodiff.training.prepare import prepare_dataset
from spectrodiff.training.train import (
    TrainOptions,
    add_aligned_conditions,
    add_music_conditioning,
    bar_columns,
    crop_aligned,
    load_dataset,
    tile_pixels,
    train,
)

BEAT_PARAMS = SpectrogramParams(num_frequencies=64, columns_per_beat=8)
# Relative chords of the table's progressions (a chord a bar above the tonic): i - VI in minor, I - IV - V in major.
STYLES = {"drums": {"captions": ["a drum beat"], "tempo": [80, 160], "meter": "4/4", "modes": ["minor", "major"],
                    "progressions": {"minor": [[[0, 3, 7], [8, 0, 3]]],
                                     "major": [[[0, 4, 7], [5, 9, 0], [7, 11, 2]]]}}}


# ---- chords ---------------------------------------------------------------------------------------------------


def test_chord_symbols_become_pitch_classes_and_back():
    assert parse_chord("Fm") == (5, 8, 0)
    assert parse_chord("Db") == parse_chord("C#") == (1, 5, 8)
    assert parse_chord("G7") == (7, 11, 2, 5)
    assert parse_chord("Bbmaj7") == (10, 2, 5, 9)
    assert parse_chords("Fm Db, Ab | Eb") == [(5, 8, 0), (1, 5, 8), (8, 0, 3), (3, 7, 10)]
    for symbol in ("Fm", "Db", "G7", "Bbmaj7", "Am7", "Bdim", "Esus4"):
        assert chord_name(parse_chord(symbol)) == symbol.replace("Db", "C#").replace("Bb", "Bb")
    assert key_of_chords(parse_chords("Fm Db Ab Eb")) == "F minor"
    assert key_of_chords(parse_chords("C F G")) == "C major"


@pytest.mark.parametrize("text", ["Hmaj", "Cxyz", "", "F#m Q"])
def test_unknown_chords_are_one_line_errors(text):
    with pytest.raises(SpectrodiffError) as error:
        parse_chords(text)
    assert "\n" not in str(error.value)


def test_chords_repeat_to_fill_the_bars_or_are_refused():
    chords = parse_chords("Fm Db")
    assert fit_chords(chords, 4) == chords * 2
    with pytest.raises(SpectrodiffError, match="do not fit 3 bars"):
        fit_chords(chords, 3)
    with pytest.raises(SpectrodiffError, match="do not fit 1 bars"):
        fit_chords(chords, 1)
    with pytest.raises(SpectrodiffError, match="do not fit"):
        GenerateJob(prompt="x", bpm=100, bars=3, chords="Fm Db")
    with pytest.raises(SpectrodiffError, match="unknown chord symbol 'Hmaj'"):
        GenerateJob(prompt="x", chords="Hmaj")


def test_aligned_conditions_follow_bars_and_beats():
    """8 columns a beat, 4/4: a bar is 32 pixel columns, 4 latent columns of 8; the chord changes on the bar line."""
    rows = aligned_conditions(parse_chords("Fm Db"), "4/4", 8, width=12, factor=8)
    assert rows.shape == (ALIGNED_CHANNELS, 1, 12)  # the chroma layout: the same at every latent row
    rows = rows[:, 0]
    fm, db = rows[:CHORD_CHANNELS, 0].nonzero().flatten().tolist(), rows[:CHORD_CHANNELS, 4].nonzero().flatten()
    assert fm == [0, 5, 8] and db.tolist() == [1, 5, 8]
    assert torch.equal(rows[:, 0], rows[:, 8])  # two bars later: Fm again, same place in the bar
    assert not torch.equal(rows[CHORD_CHANNELS:, 0], rows[CHORD_CHANNELS:, 1])  # the bar position moves
    assert torch.allclose(rows[CHORD_CHANNELS + 2:, 0], rows[CHORD_CHANNELS + 2:, 1], atol=1e-6)  # a beat each
    shifted = aligned_conditions(parse_chords("Fm Db"), "4/4", 8, width=8, factor=8, start_column=32)[:, 0]
    assert torch.equal(shifted[:CHORD_CHANNELS, 0], rows[:CHORD_CHANNELS, 4])  # a crop a bar in starts on Db
    blank = without_chords(rows, dim=0)
    assert not blank[:CHORD_CHANNELS].any() and torch.equal(blank[CHORD_CHANNELS:], rows[CHORD_CHANNELS:])
    waltz = aligned_conditions(parse_chords("C G"), "3/4", 8, width=6, factor=8)[:, 0]
    assert waltz[:CHORD_CHANNELS, 2].nonzero().flatten().tolist() == [0, 4, 7]  # 24 columns a bar: column 2 is C
    assert waltz[:CHORD_CHANNELS, 3].nonzero().flatten().tolist() == [2, 7, 11]


def chord_audio(pitches: list[int], seconds: float = 1.0, rate: int = 44100) -> torch.Tensor:
    """`(N,)` the MIDI `pitches` as tones with partials 1-8 at 1/n (a soft sawtooth each)."""
    t = torch.arange(int(seconds * rate)) / rate
    return sum(torch.sin(2 * torch.pi * 440 * 2 ** ((p - 69) / 12) * n * t) / n
               for p in pitches for n in range(1, 9)) / (8 * len(pitches))


@pytest.mark.parametrize("root", [0, 7])
def test_the_mel_layout_draws_a_chord_where_its_notes_sound(root):
    """A rendered triad's image rows, laid out as the conditions are, are nearest the template of its own chord of
    all 24 major and minor triads (the other 23 are the negative controls)."""
    params = SpectrogramParams(num_frequencies=128, columns_per_beat=32)
    layout = chord_layout("mel", params, 8)
    assert (layout.chord_channels, layout.rows, layout.channels) == (8, 16, 8 + POSITION_CHANNELS)
    notes = [48 + root, 52 + root, 55 + root, 60 + root, 64 + root, 67 + root]  # two octaves of the major triad
    mel = waveform_to_mel(chord_audio(notes), SpectrogramParams(num_frequencies=128)).mean(-1)  # its clock twin
    heard = ((mel / mel.max()) ** params.power_for_image).flip(0).reshape(layout.rows, 8).T.numpy()
    triads = [(r, (r + third) % 12, (r + 7) % 12) for r in range(12) for third in (4, 3)]
    distances = [float(np.abs(layout.chord_map(triad) - heard).mean()) for triad in triads]
    assert triads[int(np.argmin(distances))] == (root, (root + 4) % 12, (root + 7) % 12)
    conditions = aligned_conditions(parse_chords("C G"), "4/4", 8, width=8, factor=8, layout=layout)
    assert conditions.shape == (8 + POSITION_CHANNELS, 16, 8)
    assert not torch.equal(conditions[:8, :, 0], conditions[:8, :, 4])  # the chord changes on the bar line
    assert torch.equal(conditions[8:, 0], conditions[8:, 5])  # the bar position is the same at every row
    blank = without_chords(conditions, dim=0)
    assert not blank[:8].any() and torch.equal(blank[8:], conditions[8:])


def test_an_unknown_layout_or_one_that_does_not_fill_latent_rows_is_refused():
    with pytest.raises(SpectrodiffError, match="unknown aligned layout 'wavelet'"):
        chord_layout("wavelet", BEAT_PARAMS, 8)
    with pytest.raises(SpectrodiffError, match="whole latent rows"):
        chord_layout("mel", SpectrogramParams(num_frequencies=60, columns_per_beat=8), 8)


# ---- a beat-time model ----------------------------------------------------------------------------------------


def chord_model(seed: int) -> SpectrodiffPipeline:
    """A tiny beat-time pipeline with musical and aligned conditions (chroma), the new input weights drawn from
    `seed` (non-zero, so that chords matter)."""
    pipe = build_tiny_pipeline(BEAT_PARAMS)
    add_music_conditioning(pipe)
    add_aligned_conditions(pipe)
    torch.manual_seed(seed)
    with torch.no_grad():
        pipe.unet.conv_in.weight[:, 4:].normal_(std=0.5)
    pipe.register_to_config(music_styles=STYLES)
    return pipe


@pytest.fixture(scope="module")
def beat_model() -> SpectrodiffPipeline:
    return chord_model(2)


def test_widening_the_input_keeps_what_the_model_did(tmp_path):
    plain = build_tiny_pipeline(BEAT_PARAMS)
    widened = build_tiny_pipeline(BEAT_PARAMS)
    add_aligned_conditions(widened)
    assert widened.unet.config.in_channels == 4 + ALIGNED_CHANNELS and widened.aligned_channels == ALIGNED_CHANNELS
    latents = torch.randn(1, 4, 8, 16)
    text = plain.encode_text(["drums"])
    conditions = torch.randn(1, ALIGNED_CHANNELS, 8, 16)
    before = plain.unet(latents, 10, encoder_hidden_states=text).sample
    after = widened.unet(torch.cat([latents, conditions], 1), 10, encoder_hidden_states=text).sample
    assert torch.allclose(before, after, atol=1e-5)


def test_a_chroma_model_relaid_in_mel_keeps_its_latents_and_bar_position(tmp_path):
    pipe = chord_model(3)
    before = pipe.unet.conv_in.weight.detach().clone()
    add_aligned_conditions(pipe, "mel")
    after = pipe.unet.conv_in.weight
    assert pipe.aligned_channels == 8 + POSITION_CHANNELS and pipe.chord_layout.name == "mel"
    assert torch.equal(after[:, :4], before[:, :4]) and torch.equal(after[:, -POSITION_CHANNELS:],
                                                                   before[:, -POSITION_CHANNELS:])
    assert not after[:, 4:-POSITION_CHANNELS].any()  # the new chord channels start at zero
    with torch.no_grad():
        pipe.unet.conv_in.weight[:, 4:-POSITION_CHANNELS].normal_(std=0.5)
    pipe.save_pretrained(tmp_path / "mel")
    model = SpectrodiffPipeline.load(str(tmp_path / "mel"))
    assert model.chord_layout.name == "mel" and model.aligned_channels == 8 + POSITION_CHANNELS
    job = GenerateJob(prompt="a drum beat", seed=1, steps=2, iters=2, bpm=120, bars=2, chords="Am F")
    heard = [soundfile.read(make(model, job.replace(chords=chords), Output(tmp_path / chords)).audio)[0]
             for chords in ("Am F", "C G")]
    assert len(heard[0]) == 176400 and not np.array_equal(*heard)  # chords matter in the mel layout too


def test_a_beat_time_loop_is_whole_bars_with_its_tempo_and_chords(beat_model, tmp_path):
    job = GenerateJob(prompt="a drum beat", seed=1, steps=2, iters=2, bpm=120, bars=2, chords="Am F")
    result = make(beat_model, job, Output(tmp_path / "a"))
    assert soundfile.info(result.audio).frames == 176400  # 2 bars of 4/4 at 120 BPM, to the sample
    image = Image.open(result.image)
    params, _ = image_params(image)
    assert image.width == 2 * 4 * 8 and params.columns_per_beat == 8 and params.tempo == 120
    music = json.loads(result.sidecar.read_text())["music"]
    assert music["chords"] == "Am F" and music["chords_source"] == "asked" and music["key"] == "A minor"
    other = make(beat_model, job.replace(chords="C G"), Output(tmp_path / "b"))
    assert not np.array_equal(soundfile.read(result.audio)[0], soundfile.read(other.audio)[0])  # chords matter
    again = make(beat_model, job, Output(tmp_path / "c"))
    assert np.array_equal(soundfile.read(result.audio)[0], soundfile.read(again.audio)[0])


def test_a_beat_time_model_picks_a_progression_and_refuses_tempi_it_never_heard(beat_model, tmp_path):
    result = make(beat_model, GenerateJob(prompt="a drum beat", seed=1, steps=2, iters=2, bpm=100, bars=1,
                                          key="D major"), Output(tmp_path / "a"))
    music = json.loads(result.sidecar.read_text())["music"]
    assert music["chords"] == "D G A" and music["chords_source"] == "model"  # I IV V of the table, in D
    assert soundfile.info(result.audio).frames == round(4 * 60 / 100 * 44100)
    with pytest.raises(SpectrodiffError, match="outside the tempi this model was trained on"):
        make(beat_model, GenerateJob(prompt="a drum beat", steps=2, bpm=200, bars=1), Output(tmp_path / "b"))


def test_chords_need_a_model_that_takes_them(tmp_path):
    with pytest.raises(SpectrodiffError, match="does not take chords"):
        make(build_tiny_pipeline(), GenerateJob(prompt="x", steps=2, bpm=100, bars=1, chords="Am"),
             Output(tmp_path))


# ---- training -------------------------------------------------------------------------------------------------


def beat_dataset(root) -> tuple:
    """Drum loops at 90 and 150 BPM, labelled with a tempo and a progression, prepared into beat-time tiles."""
    catalogue = root / "catalogue"
    files = []
    for i, bpm in enumerate((90, 150)):
        path = catalogue / f"beat_{bpm}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, drums(12.0, bpm=bpm, seed=i), 44100, subtype="PCM_16")
        path.with_suffix(".txt").write_text("a drum beat\n")
        files.append({"file": path.name, "tempo": bpm, "key": "A minor", "meter": "4/4"})
    (catalogue / "catalogue.json").write_text(json.dumps({"files": files}))
    manifest = prepare_dataset(catalogue, root / "dataset", n_mels=64, validation=0, columns_per_beat=8, beats=16)
    return root / "dataset", manifest


def test_beat_time_tiles_start_on_bar_lines_at_their_clips_tempo(tmp_path):
    dataset, manifest = beat_dataset(tmp_path)
    assert manifest["params"]["columns_per_beat"] == 8
    lines = [json.loads(line) for line in (dataset / "train" / "metadata.jsonl").read_text().splitlines()]
    for line in lines:
        bar_ms = 4 * 60_000 / line["tempo"]
        assert line["start_ms"] % bar_ms == pytest.approx(0, abs=1) or line["start_ms"] % bar_ms == \
            pytest.approx(bar_ms, abs=1)
        image = Image.open(dataset / "train" / line["file_name"])
        params, _ = image_params(image)
        assert image.width == 16 * 8 and params.tempo == line["tempo"]
    assert {line["tempo"] for line in lines} == {90, 150}
    assert len([line for line in lines if line["tempo"] == 150]) > len([line for line in lines if line["tempo"] == 90])


def test_training_crops_start_on_bar_lines_and_carry_aligned_chords(tmp_path):
    dataset_path, _ = beat_dataset(tmp_path)
    dataset = load_dataset(dataset_path)
    item = dict(dataset.train[0])
    item["music"] = item["music"] | {"chords": [(9, 0, 4), (5, 9, 0)]}
    assert bar_columns(item, dataset.params) == 32
    starts: list[int] = []
    tile_pixels([item] * 16, 64, torch.Generator().manual_seed(0), starts, [32] * 16)
    assert set(starts) == {0, 32, 64}  # whole bars only, in a 128-column tile
    rows = crop_aligned([item, item], [0, 32], dataset.params, width=8, factor=8)
    assert rows[0, :CHORD_CHANNELS, 0, 0].nonzero().flatten().tolist() == [0, 4, 9]  # Am on the crop's first bar
    assert rows[1, :CHORD_CHANNELS, 0, 0].nonzero().flatten().tolist() == [0, 5, 9]  # a bar later: F
    config = tmp_path / "v3.yaml"
    base = tmp_path / "base"
    build_tiny_pipeline(BEAT_PARAMS).save_pretrained(base)
    config.write_text(yaml.safe_dump({"base": str(base), "music_conditioning": True, "aligned_conditions": True,
                                      "training": {"max_steps": 3, "batch_size": 2, "lr": 1e-3, "crop_width": 64,
                                                   "checkpoint_every": 3, "validate_every": 100}}))
    train(TrainOptions(dataset=dataset_path, out=tmp_path / "out", config=config, validation_steps=2,
                       validation_iters=2, log=lambda _: None))
    model = SpectrodiffPipeline.load(str(tmp_path / "out"))
    assert model.aligned_channels == ALIGNED_CHANNELS and model.spectrogram.columns_per_beat == 8
    assert model.unet.conv_in.weight[:, 4:].abs().sum() > 0  # the chords' weights learned something
