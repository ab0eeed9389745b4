"""Training (training/train.py and `spectrodiff train`): exact resume, LoRA and full fine-tuning outputs that
`generate` loads, logs and checkpoints, proof that a tiny model learns, bad input."""

import csv
import json
import math
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from spectrodiff.cli import app, main
from spectrodiff.codec.params import SpectrogramParams
from spectrodiff.errors import SpectrodiffError
from spectrodiff.generation.jobs import Keyframe
from spectrodiff.generation.pipeline import SpectrodiffPipeline
from spectrodiff.generation.timeline import Timeline
from spectrodiff.signals import chord, drums
from spectrodiff.testing import build_tiny_pipeline
from spectrodiff.training.core import (
    Task,
    Update,
    learning_rate_scheduler,
    read_log,
    step_generator,
    train_loop,
    weights_digest,
)
from spectrodiff.training.options import LR_SCHEDULES, Schedule, with_config
from spectrodiff.training.prepare import prepare_dataset
from spectrodiff.training.train import LOG_COLUMNS, TrainOptions, train

TINY = Path(__file__).parent.parent / "training" / "configs" / "tiny.yaml"
FAST = dict(validation_steps=2, validation_iters=2)


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    monkeypatch.delenv("SPECTRODIFF_DEBUG", raising=False)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two clearly different styles, four tracks each, 1.28 s tiles (512 x 128 pixels), a quarter held out."""
    root = tmp_path_factory.mktemp("train")
    for i in range(4):
        for caption, audio in (("piano chords", chord(3.0, root_hz=110 * (1 + 0.25 * i), seed=i)),
                               ("drum beat", drums(3.0, bpm=100 + 20 * i, seed=i))):
            path = root / "catalogue" / caption.replace(" ", "_") / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, audio, 44100, subtype="PCM_16")
    prepare_dataset(root / "catalogue", root / "dataset", seconds=1.28, validation=0.25)
    return root / "dataset"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny model with the dataset's spectrogram parameters (Riffusion's 512 mel bins), so it can be tuned on it."""
    folder = tmp_path_factory.mktemp("base")
    build_tiny_pipeline(SpectrogramParams()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def other_base(tmp_path_factory) -> Path:
    """A tiny model whose spectrogram parameters (64 mel bins) do not fit the dataset, though its UNet's weights have
    the same shapes as base_dir's."""
    folder = tmp_path_factory.mktemp("other")
    build_tiny_pipeline().save_pretrained(folder)
    return folder


def tensorboard_scalars(folder: Path, tag: str) -> dict[int, float]:
    """{step: value} of one scalar from TensorBoard event files (TFRecord framing: length, crc, event, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    values = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        while data:
            length = struct.unpack("<Q", data[:8])[0]
            event = Event.FromString(data[12: 12 + length])
            data = data[16 + length:]
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = value.simple_value
    return values


def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.slow
def test_resume_ends_with_the_same_weights(dataset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # With gradient accumulation and EMA (the saved model holds the averages), whose state must resume too.
    common = dict(config=TINY, checkpoint_every=3, validate_every=3, batch_size=2, grad_accum=2, ema=0.9, **FAST)
    train(TrainOptions(dataset, straight, max_steps=6, **common))
    # A run "killed" at step 3 (its last checkpoint), then resumed to step 6 from the command line.
    train(TrainOptions(dataset, resumed, max_steps=3, **common))
    result = invoke("train", dataset, "-o", resumed, "--config", TINY, "--max-steps", 6, "--checkpoint-every", 3,
                    "--validate-every", 3, "--validation-steps", 2, "--batch-size", 2, "--grad-accum", 2,
                    "--ema", 0.9, "--resume", "latest")
    assert result.exit_code == 0, result.output
    a, b = unet_weights(straight), unet_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # Checkpoints, the CSV log and validation clips of the run.
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    with (resumed / "train_log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(7))
    assert all(r["loss"] for r in rows[1:]) and [bool(r["val_loss"]) for r in rows].count(True) == 3
    # TensorBoard holds the same losses, each step once across the two runs.
    losses = tensorboard_scalars(resumed / "tensorboard", "train/loss")
    assert sorted(losses) == list(range(1, 7))
    assert all(abs(losses[int(r["step"])] - float(r["loss"])) < 1e-5 for r in rows[1:])
    for step in ("step-000000", "step-000003", "step-000006"):
        files = sorted(p.suffix for p in (resumed / "validation" / step).iterdir())
        assert files == [".json", ".json", ".png", ".png", ".wav", ".wav"], files
    # The dataset's spectrogram parameters travel into the model.
    manifest = json.loads((dataset / "manifest.json").read_text())
    saved = json.loads((resumed / "spectrogram" / "spectrogram_config.json").read_text())
    assert saved["num_frequencies"] == manifest["params"]["num_frequencies"] == 512


def generate_audio(model: Path, out: Path, *extra) -> np.ndarray:
    result = invoke("generate", "drum beat", "--model", model, "--seconds", 1.28, "--steps", 2, "--iters", 2,
                    "--no-loop", "-o", out, *extra)
    assert result.exit_code == 0, result.output
    audio, _ = soundfile.read(out)
    return audio


@pytest.mark.slow
def test_lora_and_full_fine_tuning_load_in_generate(dataset, base_dir, other_base, tmp_path):
    lora_out, full_out = tmp_path / "lora", tmp_path / "full"
    result = invoke("train", dataset, "-o", lora_out, "--base", base_dir, "--lora-rank", 4, "--max-steps", 4,
                    "--lr", 1e-2, "--validation-steps", 2, "--batch-size", 2)
    assert result.exit_code == 0, result.output
    lora_file = lora_out / "lora.safetensors"
    assert lora_file.is_file() and not (lora_out / "unet").exists()
    assert all(".lora_" in k and k.startswith("unet.") for k in load_file(str(lora_file)))

    # Full fine-tuning may retrain a model to the dataset's spectrogram parameters, when asked to.
    result = invoke("train", dataset, "-o", full_out, "--base", other_base, "--dataset-params", "--max-steps", 2,
                    "--lr", 1e-3, "--validation-steps", 2, "--batch-size", 2)
    assert result.exit_code == 0, result.output
    saved = json.loads((full_out / "spectrogram" / "spectrogram_config.json").read_text())
    assert saved["num_frequencies"] == 512  # the dataset's, not the base model's 64

    full = generate_audio(full_out, tmp_path / "full.wav")
    # With and without the LoRA:
    plain = generate_audio(base_dir, tmp_path / "plain.wav")
    adapted = generate_audio(base_dir, tmp_path / "adapted.wav", "--lora", lora_file)
    assert full.size and plain.shape == adapted.shape
    assert not np.allclose(plain, adapted)
    # The same file through diffusers' LoRA loader: weight 0 is the base model, fusing changes nothing.
    pipe = SpectrodiffPipeline.load(str(base_dir))

    def latents() -> torch.Tensor:
        return pipe.denoise(Timeline.single(Keyframe("drum beat")), 16, 2)

    base = latents()
    pipe.load_lora_weights(str(lora_file), adapter_name="drums")
    with_lora = latents()
    assert not torch.allclose(base, with_lora, atol=1e-4)
    pipe.set_adapters("drums", 0.0)
    torch.testing.assert_close(latents(), base, rtol=0, atol=1e-5)
    pipe.set_adapters("drums", 1.0)
    pipe.fuse_lora()
    torch.testing.assert_close(latents(), with_lora, rtol=1e-4, atol=1e-4)
    # A LoRA that is missing, or is not a LoRA: one line.
    for bad in (tmp_path / "absent.safetensors", base_dir / "unet" / "diffusion_pytorch_model.safetensors"):
        result = invoke("generate", "x", "--model", base_dir, "--lora", bad, "-o", tmp_path / "bad.wav")
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.stderr
        assert "lora" in errors[0].lower(), errors[0]


def test_a_base_trains_only_on_a_dataset_that_fits_it_and_its_lora_only_loads_on_such_a_model(
        dataset, base_dir, other_base, tmp_path):
    """A dataset of other spectrogram parameters than the base's is one line naming both, before any step; a LoRA
    records the base and parameters it was trained for and is refused by a model of other parameters, whose UNet
    would otherwise take it silently (the controls: a fitting dataset trains, its LoRA loads on its own base, and
    without the record on the other model too, as older LoRA files do)."""
    refused = tmp_path / "refused"
    result = invoke("train", dataset, "-o", refused, "--base", other_base, "--lora-rank", 2, "--max-steps", 1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    for words in (f"does not fit {other_base}", "512 mel bins", "64 mel bins", "num_frequencies 512 vs 64",
                  f"--base {other_base}"):
        assert words in errors[0], errors[0]
    assert not (refused / "train_log.csv").exists() and not (refused / "checkpoints").exists()

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("drum beat\n")
    summary = train(TrainOptions(dataset, tmp_path / "lora", base=str(base_dir), lora_rank=2, max_steps=1,
                                 batch_size=1, crop_width=64, validation_tiles=1, validation_prompts=prompts, **FAST))
    lora = Path(summary["lora"])
    with safe_open(str(lora), "pt") as weights:
        metadata = weights.metadata()
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert metadata["base"] == str(base_dir) and json.loads(metadata["spectrogram"]) == manifest["params"]
    assert SpectrodiffPipeline.load(str(base_dir), lora=lora).model_id.endswith(str(lora))
    with pytest.raises(SpectrodiffError, match=f"LoRA .* does not fit {other_base}: it was trained for {base_dir} "
                                               "on 512 mel bins.*the model has 64 mel bins"):
        SpectrodiffPipeline.load(str(other_base), lora=lora)
    unrecorded = tmp_path / "unrecorded.safetensors"
    save_file(load_file(str(lora)), str(unrecorded), metadata={"format": "pt"})
    SpectrodiffPipeline.load(str(other_base), lora=unrecorded)
    with pytest.raises(SpectrodiffError, match="--dataset-params needs full fine-tuning"):
        train(TrainOptions(dataset, tmp_path / "o", base=str(other_base), lora_rank=2, dataset_params=True))


@pytest.mark.slow
def test_a_tiny_model_learns(dataset, tmp_path):
    """Held-out loss of the tiny config, trained from scratch on chords vs drums, falls clearly."""
    summary = train(TrainOptions(dataset, tmp_path / "out", config=TINY, max_steps=40, validate_every=20,
                                 checkpoint_every=40, **FAST))
    first, *_, last = summary["val_losses"]
    print("held-out loss", summary["val_losses"])
    assert last < 0.8 * first, summary["val_losses"]


@pytest.mark.slow
def test_two_processes_train_one_model(dataset, tmp_path, launch):
    """`accelerate launch --num_processes 2 --cpu spectrodiff train`: each process takes its share of every step's
    batch (the epoch counts both), the held-out loss falls, and both end with the weights the model folder holds."""
    out = tmp_path / "out"
    result = launch("train", dataset, "-o", out, "--config", TINY, "--max-steps", 30, "--validate-every", 15,
                    "--checkpoint-every", 30, "--validation-steps", 2)
    assert result.returncode == 0, result.stdout + result.stderr
    digests = dict(re.findall(r"process (\d): final weights sha256 ([0-9a-f]{64})", result.stdout))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], result.stdout
    unet = SpectrodiffPipeline.load(str(out)).unet
    assert weights_digest({"unet": unet}) == digests["0"]
    rows = read_log(out)
    tiles = len((dataset / "train" / "metadata.jsonl").read_text().splitlines())
    assert float(rows[-1]["epoch"]) == pytest.approx(30 * 4 * 2 / tiles, abs=1e-3)  # batch 4 on each of 2
    first, *_, last = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert last < 0.85 * first, (first, last)
    # Control: the digest moves with any weight.
    with torch.no_grad():
        next(unet.parameters()).view(-1)[0] += 1e-6
    assert weights_digest({"unet": unet}) != digests["0"]


@pytest.mark.parametrize("name", LR_SCHEDULES)
def test_schedules_count_optimizer_steps_whatever_the_processes(name):
    """accelerate steps a prepared scheduler once per process at every optimizer step; the rate at step s is the same
    for one process or two."""
    schedule = Schedule(max_steps=20, lr=1e-3, lr_schedule=name, warmup_steps=4)

    def rates(processes: int) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        scheduler = learning_rate_scheduler(optimizer, schedule, processes)
        seen = []
        for _ in range(schedule.max_steps):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            for _ in range(processes):
                scheduler.step()
        return seen

    one = rates(1)
    assert rates(2) == pytest.approx(one)
    assert len(set(one)) > 1 or name == "constant"  # control: the rate moves, so equal lists say something


@pytest.mark.slow
def test_a_diffusers_schedule_drives_a_run(dataset, tmp_path):
    """--lr-schedule cosine is diffusers' get_scheduler: warm-up to the peak, then half a cosine down to zero."""
    result = invoke("train", dataset, "-o", tmp_path / "out", "--config", TINY, "--max-steps", 6, "--lr", 1e-3,
                    "--lr-schedule", "cosine", "--warmup-steps", 2, "--validate-every", 6, "--validation-steps", 2)
    assert result.exit_code == 0, result.output
    logged = [float(r["lr"]) for r in read_log(tmp_path / "out")[1:]]
    expected = [1e-3 * (s / 2 if s < 2 else 0.5 * (1 + math.cos(math.pi * (s - 2) / 4))) for s in range(6)]
    assert logged == pytest.approx(expected, rel=1e-2), logged
    result = invoke("train", dataset, "-o", tmp_path / "bad", "--config", TINY, "--lr-schedule", "sideways")
    assert result.exit_code == 1 and "--lr-schedule must be one of warmup-constant" in result.output


def spectral_centroid(audio: np.ndarray) -> float:
    """Mean spectral centroid (Hz) of `(N,)` or `(C, N)` audio at 44.1 kHz."""
    mono = torch.from_numpy(np.atleast_2d(audio).mean(axis=0)).float()
    magnitude = torch.stft(mono, 2048, 512, window=torch.hann_window(2048), return_complex=True).abs()
    freqs = torch.fft.rfftfreq(2048, 1 / 44100)[:, None]
    return float(((magnitude * freqs).sum(0) / magnitude.sum(0).clamp_min(1e-9)).mean())


@pytest.mark.slow
def test_prompts_steer_generations_toward_their_styles(dataset, tmp_path):
    """A tiny UNet trained from scratch for 100 steps on piano chords vs drum beats, over the bundled model's
    trained VAE and the pretrained MiniLM text encoder: every clip generated for "drum beat" sits higher in spectral
    centroid than every clip for "piano chords", as the training audio does. (Over the tiny config's random VAE
    the two prompts give the same centroid: a random decoder paints every latent alike.)"""
    from spectrodiff.bundled import MODELS_DIR as BUNDLED_MODELS_DIR
    from spectrodiff.generation.jobs import GenerateJob
    from spectrodiff.generation.modes import make
    from spectrodiff.generation.output import Output
    from spectrodiff.generation.pipeline import SpectrodiffPipeline

    catalogue = dataset.parent / "catalogue"
    prepare_dataset(catalogue, tmp_path / "dataset", seconds=1.28, validation=0.25, n_mels=128)
    config = yaml.safe_load(TINY.read_text())
    config["text_encoder"], config["vae"] = "minilm", {"pretrained": str(BUNDLED_MODELS_DIR / "mini")}
    config["unet"].update(cross_attention_dim=384, in_channels=8, out_channels=8)
    (tmp_path / "steer.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    train(TrainOptions(tmp_path / "dataset", out, config=tmp_path / "steer.yaml", max_steps=100, validate_every=100,
                       checkpoint_every=100, batch_size=8, lr=2e-3, **FAST))
    pipe = SpectrodiffPipeline.load(str(out))
    pipe.set_progress_bar_config(disable=True)
    centroids = {}
    for prompt in ("piano chords", "drum beat"):
        results = [make(pipe, GenerateJob(prompt=prompt, seed=seed, seconds=1.28, loop=False, steps=12, iters=8),
                        Output(tmp_path / f"{prompt}-{seed}.wav"))
                   for seed in range(3)]
        centroids[prompt] = [spectral_centroid(soundfile.read(r.audio, always_2d=True)[0].T) for r in results]
    data = {name: np.mean([spectral_centroid(soundfile.read(p)[0]) for p in (catalogue / name).glob("*.wav")])
            for name in ("piano_chords", "drum_beat")}
    print("generated centroids (Hz)", centroids, "training audio", data)
    assert data["drum_beat"] > data["piano_chords"]
    assert min(centroids["drum beat"]) > max(centroids["piano chords"]), centroids


@pytest.mark.parametrize("case", ["no-metadata", "empty", "unknown-base", "both", "neither", "steps", "rank",
                                  "crop", "lora-without-base", "not-empty"])
def test_bad_input_is_one_line(case, dataset, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    args = {
        "no-metadata": (tmp_path, "--config", TINY),
        "empty": (empty, "--config", TINY),
        "unknown-base": (dataset, "--base", "./no/such/model"),
        "both": (dataset, "--base", "x/y", "--config", TINY),
        "neither": (dataset,),
        "steps": (dataset, "--config", TINY, "--max-steps", 0),
        "rank": (dataset, "--config", TINY, "--lora-rank", -1),
        "crop": (dataset, "--config", TINY, "--crop-width", 12),
        "lora-without-base": (dataset, "--config", TINY, "--lora-rank", 4),
        "not-empty": (dataset, "--config", TINY),
    }[case]
    out = tmp_path / "out"
    if case == "not-empty":
        out.mkdir()
        (out / "something").write_text("x")
    # Through the console entry point: option ranges are checked by the parser there (exit status 2).
    monkeypatch.setattr(sys, "argv", ["spectrodiff", "train", *map(str, args), "-o", str(out)])
    status = main()
    stdout, stderr = capsys.readouterr()
    assert status != 0 and "Traceback" not in stdout + stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error:"), stderr


@pytest.mark.parametrize(("command", "config_text"), [
    ("train", TINY.read_text().replace("  batch_size: 4\n", "  batch_size: 0\n")),
    ("train-vocoder", "training:\n  batch_size: 0\n")])
def test_an_option_out_of_range_reads_the_same_from_the_command_line_and_a_config(command, config_text, dataset,
                                                                                 tmp_path):
    """One declaration checks both faces: `--batch-size 0` on the command line and `batch_size: 0` in a config's
    training section are the same line, before any work; the command line's value stands over the config's."""
    assert "batch_size: 0" in config_text  # control: the config holds the bad value
    config = tmp_path / "zero.yaml"
    config.write_text(config_text)
    good = tmp_path / "good.yaml"
    good.write_text(config_text.replace("batch_size: 0", "batch_size: 2"))
    from_cli = invoke(command, dataset, "-o", tmp_path / "a", "--config", good, "--batch-size", 0)
    from_config = invoke(command, dataset, "-o", tmp_path / "b", "--config", config)
    for result in (from_cli, from_config):
        assert result.exit_code == 1 and result.stderr.splitlines() == [
            "error: --batch-size must be between 1 and 4096, got 0"], result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    options = TrainOptions(dataset, tmp_path / "c", config=config, batch_size=2)
    assert with_config(options, {"batch_size": 0, "lr": 0.5}).batch_size == 2  # given: the config's does not apply
    assert with_config(options, {"batch_size": 0, "lr": 0.5}).lr == 0.5  # not given: the config's does


def test_the_learning_rate_defaults_by_what_is_trained(dataset, tmp_path):
    """1e-5 for full fine-tuning of a base, else 1e-4; a given rate, or a config's, stands."""
    assert TrainOptions(dataset, tmp_path, base="some/model").lr == 1e-5
    assert TrainOptions(dataset, tmp_path, base="some/model", lora_rank=4).lr == 1e-4
    assert TrainOptions(dataset, tmp_path, config=TINY).lr == 1e-4
    assert TrainOptions(dataset, tmp_path, base="some/model", lr=3e-3).lr == 3e-3
    assert with_config(TrainOptions(dataset, tmp_path, base="some/model"), {"lr": 2e-2}).lr == 2e-2


def test_options_are_checked_before_work(dataset, tmp_path):
    with pytest.raises(SpectrodiffError, match="exactly one"):
        train(TrainOptions(dataset, tmp_path / "o"))
    with pytest.raises(SpectrodiffError, match="resume"):
        train(TrainOptions(dataset, tmp_path / "o", config=TINY, resume="latest"))
    typo = tmp_path / "typo.yaml"
    typo.write_text(TINY.read_text() + "train_vea: true\n")
    with pytest.raises(SpectrodiffError, match="unknown field.*train_vea"):
        train(TrainOptions(dataset, tmp_path / "o", config=typo))
    typo.write_text(TINY.read_text() + "encode_steps: -1\n")
    with pytest.raises(SpectrodiffError, match="encode_steps must be"):
        train(TrainOptions(dataset, tmp_path / "o", config=typo))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_config_can_train_the_vae_and_set_encode_steps(dataset, tmp_path):
    config = tmp_path / "vae.yaml"
    config.write_text(TINY.read_text().replace("train_vae: false", "train_vae: true") + "encode_steps: 3\n")
    out = tmp_path / "out"
    train(TrainOptions(dataset, out, config=config, max_steps=2, validate_every=2, **FAST))
    with (out / "train_log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["vae_loss"]) > 0 for r in rows[1:])
    assert json.loads((out / "vae" / "config.json").read_text())["scaling_factor"] != 0.18215  # "auto", saved
    state = json.loads((out / "checkpoints" / "step-000002" / "state.json").read_text())
    assert state["scaling_factor"] == json.loads((out / "vae" / "config.json").read_text())["scaling_factor"]
    assert json.loads((out / "model_index.json").read_text())["encode_steps"] == 3


@pytest.mark.slow
def test_decoder_fine_tune_keeps_the_latent_space(tmp_path, dataset):
    """training/decoder.py trains the VAE decoder alone: the encoder (so every latent the UNet learned) and the UNet
    stay bit-for-bit, and the decoder renders the validation tiles more faithfully."""
    from spectrodiff import SpectrogramParams
    from spectrodiff.generation.pipeline import SpectrodiffPipeline
    from spectrodiff.training.decoder import DecoderOptions, finetune_decoder

    build_tiny_pipeline(SpectrogramParams()).save_pretrained(tmp_path / "base")
    opts = DecoderOptions(str(tmp_path / "base"), dataset, tmp_path / "out", max_steps=30, batch_size=4,
                          crop_width=64, lr=2e-3, checkpoint_every=15, validate_every=30)
    summary = finetune_decoder(opts, log=lambda _: None)
    assert summary["steps"] == 30 and summary["val_sc"][-1] < 0.9 * summary["val_sc"][0], summary["val_sc"]
    before = SpectrodiffPipeline.load(str(tmp_path / "base"))
    after = SpectrodiffPipeline.load(str(tmp_path / "out"))
    for name in ("encoder", "quant_conv"):
        for (key, x), (_, y) in zip(getattr(before.vae, name).state_dict().items(),
                                    getattr(after.vae, name).state_dict().items(), strict=True):
            assert torch.equal(x, y), key
    assert all(torch.equal(x, y) for x, y in zip(before.unet.parameters(), after.unet.parameters(), strict=True))
    assert not torch.equal(before.vae.decoder.conv_out.weight, after.vae.decoder.conv_out.weight)
    with pytest.raises(SpectrodiffError, match="not an empty folder"):
        finetune_decoder(opts, log=lambda _: None)
    assert finetune_decoder(opts.replace(resume="latest", max_steps=31), log=lambda _: None)["steps"] == 31


@pytest.mark.slow
def test_decoder_fine_tune_takes_more_datasets(tmp_path, dataset):
    """Datasets after the first add their training tiles (validation stays the first's); one prepared with other
    mel bins or tile lengths is a one-line error naming it."""
    from spectrodiff import SpectrogramParams
    from spectrodiff.training.decoder import DecoderOptions, finetune_decoder

    build_tiny_pipeline(SpectrogramParams()).save_pretrained(tmp_path / "base")
    lines = []
    opts = DecoderOptions(str(tmp_path / "base"), dataset, tmp_path / "out", extra=(dataset,), max_steps=1,
                          batch_size=2, crop_width=64, validate_every=1)
    finetune_decoder(opts, log=lines.append)
    train, validation = (len(list((dataset / split).glob("**/*.png"))) for split in ("train", "validation"))
    assert f"encoding {2 * train + validation} tiles once (the encoder is frozen)" in lines
    other = tmp_path / "other"
    prepare_dataset(dataset.parent / "catalogue", other, seconds=1.28, n_mels=64)
    opts = DecoderOptions(str(tmp_path / "base"), dataset, tmp_path / "out2", extra=(other,), max_steps=1)
    with pytest.raises(SpectrodiffError, match=f"the dataset {other} has 64 mel bins, the model 512"):
        finetune_decoder(opts, log=lambda _: None)
    shorter = tmp_path / "shorter"
    prepare_dataset(dataset.parent / "catalogue", shorter, seconds=0.64)
    opts = DecoderOptions(str(tmp_path / "base"), dataset, tmp_path / "out3", extra=(shorter,), max_steps=1)
    with pytest.raises(SpectrodiffError, match=f"the dataset {shorter} has tiles 64 columns wide, {dataset} 128"):
        finetune_decoder(opts, log=lambda _: None)


def copy_of(dataset: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(dataset, tmp_path / "dataset"))


def test_hostile_datasets_and_configs_are_one_line_before_work(dataset, tmp_path):
    """A metadata entry naming a file outside the dataset is refused (it was trained on); a crop wider than the
    tiles names the tiles, not seconds; YAML aliases in a config (416 bytes expanded to 5.4 GB) and 5000-deep
    nesting are refused as in compose plans."""
    outside = copy_of(dataset, tmp_path)
    (tmp_path / "x.png").write_bytes(next((outside / "train").rglob("*.png")).read_bytes())
    metadata = outside / "train" / "metadata.jsonl"
    metadata.write_text(json.dumps({"file_name": "../../x.png", "text": "stolen"}) + "\n" + metadata.read_text())
    with pytest.raises(SpectrodiffError, match=r"metadata.jsonl line 1: file_name '../../x.png' is not a file inside"):
        train(TrainOptions(outside, tmp_path / "o1", config=TINY))
    with pytest.raises(SpectrodiffError, match=r"crop_width 100000 is wider than the dataset's tiles \(128 columns\)"):
        train(TrainOptions(dataset, tmp_path / "o2", config=TINY, crop_width=100_000))
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text('a: &a ["x","x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                    + TINY.read_text())
    with pytest.raises(SpectrodiffError, match=r"bomb.yaml line 2: not valid YAML \(aliases"):
        train(TrainOptions(dataset, tmp_path / "o3", config=bomb))
    bomb.write_text("unet: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpectrodiffError, match=r"line 1: not valid YAML \(nested deeper than 16 levels\)"):
        train(TrainOptions(dataset, tmp_path / "o4", config=bomb))
    assert not any((tmp_path / f"o{n}").exists() for n in range(1, 5))


@pytest.mark.slow
def test_a_cut_tile_is_named_and_lost_random_states_warn(dataset, tmp_path):
    """A tile cut short stops training with its path (it was "image file is truncated" with no path); a checkpoint
    whose random states cannot be read resumes with a warning (it resumed silently, no longer exact)."""
    cut = copy_of(dataset, tmp_path)
    for tile in (cut / "train").rglob("*.png"):
        tile.write_bytes(tile.read_bytes()[:200])
    with pytest.raises(SpectrodiffError, match=r"train/.*\.png is not a readable image"):
        train(TrainOptions(cut, tmp_path / "cut", config=TINY, max_steps=1, batch_size=2, **FAST))
    out = tmp_path / "run"
    common = dict(config=TINY, checkpoint_every=1, validate_every=100, batch_size=2, **FAST)
    train(TrainOptions(dataset, out, max_steps=1, **common))
    for states in (out / "checkpoints").rglob("random_states_*.pkl"):
        states.write_bytes(b"not a pickle")
    with pytest.warns(UserWarning, match="random states could not be read; resuming without them"):
        train(TrainOptions(dataset, out, max_steps=2, resume="latest", **common))


class TwoLines(Task):
    """The smallest task with a vocoder's shape (two models, two optimizers, EMA): checkpoints in a second."""

    def __init__(self):
        torch.manual_seed(0)
        self.models = {"g": torch.nn.Linear(2, 1), "d": torch.nn.Linear(2, 1)}

    def prepare(self, accelerator):
        updates = []
        for model in self.models.values():
            model, optimizer = accelerator.prepare(model, torch.optim.AdamW(model.parameters(), lr=0.01))
            updates.append(Update(optimizer, [model], list(model.parameters()),
                                  lambda x, model=model: (model(x).square().mean(), {"loss": 0.0})))
        return updates

    def trainable(self):
        return self.models

    def batch(self, step, micro, rank, world):
        return torch.randn(4, 2, generator=step_generator(0, step, micro, rank))

    def finish(self):
        pass


@pytest.mark.parametrize("name", ["trainable.safetensors", "ema.safetensors", "state.json", "optimizer_1.bin",
                                  "scheduler.bin", "../../run.json"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(name, tmp_path):
    """A checkpoint file cut short (a full disk, a killed copy) stops `--resume` with one line naming it: it was
    "internal error (PytorchStreamReader failed reading zip archive ...)" naming no file, or safetensors' "invalid
    header length". The control: the same checkpoint whole resumes."""
    schedule = dict(lr=0.01, lr_schedule="warmup-constant", ema=0.9, checkpoint_every=1, log=lambda _: None)
    train_loop(TwoLines(), Schedule(max_steps=1, **schedule), tmp_path, None, {"task": "two lines"})
    train_loop(TwoLines(), Schedule(max_steps=2, **schedule), tmp_path, "latest", {"task": "two lines"})
    damaged = tmp_path / "checkpoints" / "step-000002" / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(SpectrodiffError, match=f"cannot resume: {re.escape(str(damaged.resolve()))} is missing "
                                               r"or damaged \(\w"):
        train_loop(TwoLines(), Schedule(max_steps=3, **schedule), tmp_path, "latest", {"task": "two lines"})


@pytest.mark.parametrize("part", ["unet", "vae"])
def test_a_config_too_big_for_memory_is_one_line_naming_its_sizes(part, dataset, tmp_path):
    """block_out_channels of 262,144 (terabytes of weights) are counted on the meta device and refused with the
    sizes named: the allocator's "DefaultCPUAllocator: can't allocate memory" was an internal error, and a config
    asking for a little more than the memory went on to the OOM killer."""
    config = yaml.safe_load(TINY.read_text())
    config[part]["block_out_channels"] = [262_144] * len(config[part]["block_out_channels"])
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(config))
    with pytest.raises(SpectrodiffError, match=rf"config: {part}: block_out_channels \[262144, .* billion weights "
                                               r"\(\d+ GB as float32\), more than this machine's \d+ GB of memory"):
        train(TrainOptions(dataset, tmp_path / "out", config=big))
    assert not (tmp_path / "out").exists()
