"""Every generation mode end to end on a tiny random model: durations to the sample, determinism, the output
triple, extend keeping the input bit-exact, inpaint leaving the outside untouched, loop and seam metrics."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from typer.testing import CliRunner

from spectrodiff import SpectrodiffError
from spectrodiff.cli import app
from spectrodiff.codec.convert import audio_to_image, audio_to_pixels, save_image
from spectrodiff.codec.image import image_params
from spectrodiff.generation.batch import run_line
from spectrodiff.generation.jobs import JOBS, Keyframe
from spectrodiff.generation.modes import make
from spectrodiff.generation.output import Output, model_record
from spectrodiff.generation.pipeline import ENCODE_REFINE_LR, SpectrodiffPipeline, magnitude_convergence
from spectrodiff.generation.plans import load_plan
from spectrodiff.generation.timeline import Timeline
from spectrodiff.metrics import loop_wrap_ratio, seam_ratio
from spectrodiff.signals import mix
from spectrodiff.testing import build_tiny_pipeline

SR, HOP = 44100, 441
FAST = dict(steps=3, iters=4)



@pytest.fixture
def song(tmp_path) -> Path:
    path = tmp_path / "song.wav"
    soundfile.write(path, mix(6.0), SR, subtype="PCM_16")
    return path


def make_job(pipe, mode: str, out: Path | None, **fields):
    """Make a `mode` job of `fields` (few steps) into `out`."""
    return make(pipe, JOBS[mode].from_dict(FAST | fields), Output(out))


def read(path: Path) -> np.ndarray:
    return soundfile.read(path, dtype="int16", always_2d=True)[0]


def digest(path: Path) -> str:
    return hashlib.sha256(read(path).tobytes()).hexdigest()


def test_generate_writes_a_loop_triple(pipe, tmp_path):
    result = make_job(pipe, "generate", tmp_path / "sax.wav", prompt="jazzy saxophone", seed=3)
    assert (result.audio, result.image, result.sidecar) == (tmp_path / "sax.wav", tmp_path / "sax.png",
                                                            tmp_path / "sax.json")
    assert soundfile.info(result.audio).frames == 512 * HOP, "a 5.12 s loop is 512 columns of 441 samples"
    image = Image.open(result.image)
    assert image.size == (512, 64)
    params, _ = image_params(image)
    assert params == pipe.spectrogram, "the PNG decodes on its own with the model's parameters"
    record = json.loads(result.sidecar.read_text())
    assert record["job"] == {"mode": "generate", "prompt": "jazzy saxophone", "seed": 3, "guidance": 7.0,
                             "negative": "", "seconds": 5.12, "loop": True, "bpm": None, "bars": None, "key": None,
                             "meter": None, "chords": None, "steps": 3, "scheduler": "dpm", "iters": 4,
                             "vocoder": None,
                             "sample_rate": None}
    assert len(record["model"]["sha256"]) == 64 and record["spectrodiff"] and record["seconds"] == 5.12
    assert "steps" not in record and "loop" not in record, "each setting once: in the job"


def test_the_model_hash_follows_what_the_model_is_not_where_it_was_saved(model_dir, tmp_path):
    """A sidecar's model sha256 hashes weights and settings: the same model saved in another folder (diffusers then
    records another _name_or_path) hashes the same; the control, one weight changed, does not."""
    shutil.copytree(model_dir, tmp_path / "elsewhere")
    first, moved = (SpectrodiffPipeline.load(str(folder)) for folder in (model_dir, tmp_path / "elsewhere"))
    assert first.unet.config["_name_or_path"] != moved.unet.config["_name_or_path"]
    assert model_record(first)["sha256"] == model_record(moved)["sha256"]
    changed = SpectrodiffPipeline.load(str(model_dir))
    with torch.no_grad():
        next(changed.unet.parameters()).flatten()[0] += 1
    assert model_record(changed)["sha256"] != model_record(first)["sha256"]


def test_loop_wraps_without_a_seam(pipe, tmp_path):
    result = make_job(pipe, "generate", tmp_path / "l.wav", prompt="loop", seed=5, iters=16)
    audio = read(result.audio).T / 32768
    assert loop_wrap_ratio(audio, pipe.spectrogram) <= 1.0


def test_generate_is_deterministic(pipe, tmp_path):
    a = make_job(pipe, "generate", tmp_path / "a.wav", prompt="x", seed=9)
    b = make_job(pipe, "generate", tmp_path / "b.wav", prompt="x", seed=9)
    c = make_job(pipe, "generate", tmp_path / "c.wav", prompt="x", seed=10)
    assert digest(a.audio) == digest(b.audio) != digest(c.audio)


@pytest.mark.parametrize("rate", [None, 48000])
def test_every_mode_writes_the_asked_length_to_the_sample(pipe, tmp_path, rate):
    """7.3 s and 15 s are no whole number of latent columns (91.25 and 187.5 of 80 ms): plain clips, morphs,
    compositions, remixes and extensions are still exactly the asked length, rounded to the sample at the output
    rate; loops are whole columns, 12 s being 150."""
    out = rate or SR

    def length(result) -> int:
        info = soundfile.info(result.audio)
        sidecar = json.loads(result.sidecar.read_text())["seconds"]
        assert info.samplerate == out and sidecar == pytest.approx(info.frames / out, abs=1e-6)
        return info.frames

    song = tmp_path / "song.wav"
    soundfile.write(song, mix(7.3), SR, subtype="PCM_16")
    keys = [{"prompt": "a", "seconds": 3.0}, {"prompt": "b", "seed": 2, "seconds": 4.3}]

    def made(mode: str, **fields) -> int:
        return length(make_job(pipe, mode, tmp_path / f"{mode}-{len(list(tmp_path.iterdir()))}.wav", sample_rate=rate,
                           **fields))

    assert made("generate", prompt="x", seconds=7.3, loop=False) == round(7.3 * out)
    assert made("morph", keyframes=keys, seconds=15.0) == 15 * out
    assert made("compose", keyframes=keys, transition=1.0) == round(7.3 * out)
    assert made("remix", audio=song, prompt="organ", strength=0.5) == round(7.3 * out)
    assert made("extend", audio=song, prompt="more", seconds=7.3) == round(14.6 * out)
    assert made("generate", prompt="x", seconds=12.0) == 1200 * HOP * out // SR


def test_never_overwrites(pipe, tmp_path):
    make_job(pipe, "generate", tmp_path / "x.wav", prompt="x")
    before = digest(tmp_path / "x.wav")
    with pytest.raises(SpectrodiffError, match="already exists"):
        make_job(pipe, "generate", tmp_path / "x.wav", prompt="x", seed=4)
    assert digest(tmp_path / "x.wav") == before


def test_default_folder_is_dated_slug_seed(pipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = make_job(pipe, "generate", None, prompt="Jazzy Saxophone!", seed=7)
    second = make_job(pipe, "generate", None, prompt="Jazzy Saxophone!", seed=7)
    assert first.audio.parent.name.endswith("-jazzy-saxophone-7") and first.audio.parent.parent.name == "outputs"
    assert second.audio.parent.name == first.audio.parent.name + "-2"


def test_morph_and_compose(pipe, tmp_path):
    keys = [{"prompt": "church bells", "seed": 1}, {"prompt": "electronic beats", "seed": 2}]
    result = make_job(pipe, "morph", tmp_path / "m.wav", keyframes=keys, seconds=8.0)
    assert soundfile.info(result.audio).frames == 8 * SR
    assert json.loads(result.sidecar.read_text())["job"]["keyframes"][1]["prompt"] == "electronic beats"
    plan = load_plan(Path(__file__).parents[1] / "prompts" / "bells-to-beats.yaml")
    short = [{"prompt": k.prompt, "seed": k.seed, "seconds": 4.0} for k in plan["keyframes"]]
    composed = make_job(pipe, "compose", tmp_path / "c.wav", keyframes=short, transition=1.0)
    audio = read(composed.audio).T / 32768
    assert audio.shape[1] == 8 * SR
    # Tiles of the random model share latent context and phase across joins: no join stands out.
    assert seam_ratio(audio, [512 * HOP], pipe.spectrogram) <= 1.0


def test_remix_keeps_length(pipe, tmp_path, song):
    result = make_job(pipe, "remix", tmp_path / "r.wav", audio=song, prompt="organ", strength=0.5)
    assert soundfile.info(result.audio).frames == soundfile.info(song).frames
    assert json.loads(result.sidecar.read_text())["input"]["sha256"] == hashlib.sha256(song.read_bytes()).hexdigest()


def test_strength_sets_how_far_latents_move(pipe):
    """img2img: a low strength starts late in the schedule, so the result stays near the input's latents."""
    init = torch.randn(1, 4, 8, 100, generator=torch.Generator().manual_seed(0))
    def moved(strength):
        out = pipe.denoise(Timeline.single(Keyframe("organ", strength=strength)), 100, 10, init_latents=init)
        return float((out - init).norm() / init.norm())
    assert moved(0.1) < moved(0.5) < moved(1.0)


def test_extend_keeps_the_input_bit_exact(pipe, tmp_path, song):
    result = make_job(pipe, "extend", tmp_path / "e.wav", audio=song, prompt="more", seconds=4.0)
    source, out = read(song), read(result.audio)
    assert len(out) == len(source) + 4 * SR
    assert np.array_equal(out[: len(source)], source)
    assert np.abs(out[len(source):]).max() > 0, "the continuation is not silence"


def test_inpaint_leaves_the_outside_untouched(pipe, tmp_path, song):
    result = make_job(pipe, "inpaint", tmp_path / "i.wav", audio=song, prompt="fill", start=2.0, end=3.0)
    source, out = read(song), read(result.audio)
    assert len(out) == len(source)
    a, b = 2 * SR, 3 * SR
    assert np.array_equal(out[:a], source[:a]) and np.array_equal(out[b:], source[b:])
    assert not np.array_equal(out[a + 900: b - 900], source[a + 900: b - 900])


def test_a_two_dimensional_keep_mask_holds_single_latent_pixels(pipe):
    """Riffusion's masks: kept latent pixels end exactly as the init, the others are denoised."""
    init = torch.randn(1, 4, 8, 64, generator=torch.Generator().manual_seed(0))
    keep = torch.zeros(8, 64, dtype=torch.bool)
    keep[:4, :20] = True
    out = pipe.denoise(Timeline.single(Keyframe("organ", strength=0.8)), 64, 5, init_latents=init, keep=keep)
    assert torch.equal(out[..., keep], init[..., keep])
    assert float((out[..., ~keep] - init[..., ~keep]).abs().mean()) > 0.1


def test_riffuse_grows_from_a_seed_image_between_two_prompts(pipe, tmp_path):
    params = pipe.spectrogram
    seed_image = save_image(tmp_path / "seed.png", audio_to_image(mix(5.12)[None], params))
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((params.num_frequencies, 512), 255, np.uint8)).save(mask)
    start, end = {"prompt": "bells", "seed": 1, "strength": 0.75}, {"prompt": "beats", "seed": 2, "strength": 0.75}

    def riffuse(out: str, **fields):
        return make_job(pipe, "riffuse", tmp_path / out, start=start, end=end, seed_image=seed_image, **fields)

    results = [riffuse(f"{alpha}.wav", alpha=alpha) for alpha in (0.0, 0.5)]
    assert results[0].seconds == pytest.approx(511 * HOP / SR)
    assert digest(results[0].audio) != digest(results[1].audio)
    # An all-white mask repaints everything: the same as no mask.
    masked = riffuse("masked.wav", alpha=0.5, mask_image=mask)
    assert digest(masked.audio) == digest(results[1].audio)
    # The sidecar's job redoes it.
    job = json.loads(results[1].sidecar.read_text())["job"]
    again = run_line(pipe, job | {"out": str(tmp_path / "again.wav")})
    assert digest(again.audio) == digest(results[1].audio)
    with pytest.raises(SpectrodiffError, match="alpha must be between 0 and 1, got 1.5"):
        riffuse("bad.wav", alpha=1.5)
    with pytest.raises(SpectrodiffError, match="spectrogram parameters"):
        make_job(pipe, "riffuse", tmp_path / "bad.wav", start=start, end=end, alpha=0.5, seed_image=save_image(
            tmp_path / "other.png", audio_to_image(mix(1.0)[None], type(params)())))


def test_batch_runs_jobs_and_sidecar_jobs_redo_results(pipe, model_dir, tmp_path):
    first = make_job(pipe, "generate", tmp_path / "first.wav", prompt="redo me", seed=4)
    job = json.loads(first.sidecar.read_text())["job"]
    jobs = tmp_path / "jobs.jsonl"
    lines = [dict(job, out=str(tmp_path / "again.wav")),
             {"mode": "morph", "keyframes": [{"prompt": "a"}, {"prompt": "b", "seed": 2}], "seconds": 6.0,
              "out": str(tmp_path / "morph"), "steps": 2, "iters": 2},
             {"mode": "generate", "prompt": "defaults", "seconds": 1.0, "out": str(tmp_path / "d.wav")}]
    jobs.write_text("# three jobs\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    result = CliRunner().invoke(app, ["batch", str(jobs), "--model", str(model_dir), "--steps", "1", "--iters", "1"])
    assert result.exit_code == 0, result.output
    assert digest(tmp_path / "again.wav") == digest(first.audio), "a sidecar's job reproduces the audio exactly"
    assert (tmp_path / "morph" / "a-to-b.wav").exists()
    record = json.loads((tmp_path / "d.json").read_text())
    assert (record["job"]["steps"], record["job"]["iters"]) == (1, 1), "batch options are the jobs' defaults"


@pytest.mark.slow
def test_batch_splits_its_jobs_between_processes(model_dir, tmp_path, launch):
    """`accelerate launch --num_processes 2 --cpu spectrodiff batch`: every job runs once, none is lost."""
    lines = [{"mode": "generate", "prompt": f"job {n}", "seed": n, "steps": 2, "iters": 2,
              "out": str(tmp_path / f"{n}.wav")} for n in range(5)]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = launch("batch", jobs, "--model", model_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(re.findall(r"^(\S+\.wav)$", result.stdout, flags=re.M))
    assert written == sorted(str(tmp_path / f"{n}.wav") for n in range(5)), result.stdout  # each once
    for n in range(5):
        assert json.loads((tmp_path / f"{n}.json").read_text())["job"]["seed"] == n


@pytest.mark.parametrize("args", [
    ["generate", "sax", "--seconds", "3", "--no-loop"],
    ["morph", "bells", "beats", "--seconds", "6", "--seeds", "1,2"],
    ["compose", "PLAN"],
    ["remix", "SONG", "--prompt", "organ", "--strength", "0.5"],
    ["extend", "SONG", "--prompt", "more", "--seconds", "2"],
    ["inpaint", "SONG", "--prompt", "fill", "--start", "1", "--end", "2"],
])
def test_cli_modes(model_dir, tmp_path, song, args):
    plan = tmp_path / "plan.yaml"
    plan.write_text("keyframes:\n  - {prompt: a, seconds: 3}\n  - {prompt: b, seconds: 3, seed: 2}\n")
    args = [str(plan) if a == "PLAN" else str(song) if a == "SONG" else a for a in args]
    out = tmp_path / "out.wav"
    options = ["--model", str(model_dir), "--steps", "2", "--iters", "2", "-o", str(out)]
    result = CliRunner().invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".png").exists() and out.with_suffix(".json").exists()


@pytest.mark.parametrize("args, message", [
    (["generate", "x", "--model", "nope"], "unknown model 'nope': not a folder, not a bundled model (mini)"),
    (["generate", "x", "--model", "MODEL", "--steps", "0"], "--steps"),
    (["generate", "x", "--model", "MODEL", "--steps", "1001"], "--steps"),
    (["generate", "x", "--model", "MODEL", "--seconds", "0"], "--seconds must be in (0, 600], got 0"),
    (["generate", "x", "--model", "MODEL", "--seconds", "601"], "--seconds must be in (0, 600], got 601"),
    (["remix", "SONG", "--prompt", "p", "--strength", "0", "--model", "MODEL"], "strength must be in (0, 1]"),
    (["remix", "SONG", "--prompt", "p", "--strength", "1.5", "--model", "MODEL"], "strength must be in (0, 1]"),
    (["inpaint", "SONG", "--prompt", "p", "--start", "5", "--end", "9", "--model", "MODEL"], "inside the audio"),
    (["compose", "EMPTY", "--model", "MODEL"], "the plan is empty"),
    (["compose", "BADFIELD", "--model", "MODEL"], "line 3: unknown field 'tempo'"),
    (["compose", "NOSECONDS", "--model", "MODEL"], "line 2: keyframe has no seconds"),
    (["morph", "only-one", "--model", "MODEL"], "at least two prompts"),
    (["generate", "x", "--model", "MODEL", "--scheduler", "magic"], "--scheduler must be one of dpm,"),
])
def test_bad_input_is_one_clear_line(model_dir, tmp_path, song, args, message):
    plans = {"EMPTY": "", "BADFIELD": "keyframes:\n  - prompt: a\n    tempo: 120\n    seconds: 3\n",
             "NOSECONDS": "keyframes:\n  - prompt: a\n"}
    for name, text in plans.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    args = [str(model_dir) if a == "MODEL" else str(song) if a == "SONG" else
            str(tmp_path / f"{a}.yaml") if a in plans else a for a in args]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "o.wav")])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.wav").exists()


def test_missing_component_via_cli(model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "unet")
    result = CliRunner().invoke(app, ["generate", "x", "--model", str(broken)])
    assert result.exit_code == 1 and "missing its unet/ component" in result.output


def test_long_prompt_warns_and_still_generates(pipe, tmp_path):
    with pytest.warns(UserWarning, match="truncated"):
        make_job(pipe, "generate", tmp_path / "long.wav", prompt="sax " * 60)
    assert (tmp_path / "long.wav").exists()


def test_stereo_model_makes_stereo(tmp_path):
    from spectrodiff import SpectrogramParams
    from spectrodiff.testing import build_tiny_pipeline

    stereo = build_tiny_pipeline(SpectrogramParams(num_frequencies=64, stereo=True))
    result = make_job(stereo, "generate", tmp_path / "st.wav", prompt="wide")
    assert soundfile.info(result.audio).channels == 2
    assert np.asarray(Image.open(result.image))[..., 0].max() == 0


def test_refined_encoding_renders_the_input_closer(pipe):
    """A few Adam steps on the encoder's latents bring the decoder's rendering nearer the image, deterministically,
    without touching the VAE's parameters or moving the latents far from the encoder's."""
    pixels = audio_to_pixels(mix(5.12)[None], pipe.spectrogram, 512)[0]

    def rendered_convergence(latents):
        decoded = torch.cat([image for _, image in pipe.decode_latents(latents)], dim=-1)
        return float(magnitude_convergence(decoded[None] * 2 - 1, pixels[None] * 2 - 1,
                                           pipe.spectrogram.power_for_image))

    encoded, refined = pipe.encode_image(pixels, 0), pipe.encode_image(pixels, 5)
    assert rendered_convergence(refined) < 0.9 * rendered_convergence(encoded)
    assert torch.equal(refined, pipe.encode_image(pixels, 5))
    # Adam moves each latent by about its learning rate a step at most.
    assert float((refined - encoded).pow(2).mean().sqrt()) <= 5 * ENCODE_REFINE_LR
    assert all(p.grad is None for p in pipe.vae.parameters())


def test_encode_steps_default_to_the_models_and_the_sidecar_keeps_them(tmp_path, song):
    model = build_tiny_pipeline()
    model.register_to_config(encode_steps=3)  # as mini's model_index.json carries 5
    model.save_pretrained(tmp_path / "model")
    model = SpectrodiffPipeline.load(str(tmp_path / "model"))
    model.set_progress_bar_config(disable=True)
    refined = make_job(model, "remix", tmp_path / "refined.wav", audio=song, prompt="organ", strength=0.3)
    plain = make_job(model, "remix", tmp_path / "plain.wav", audio=song, prompt="organ", strength=0.3, encode_steps=0)
    assert digest(plain.audio) != digest(refined.audio)
    assert json.loads(refined.sidecar.read_text())["job"]["encode_steps"] == 3
    job = json.loads(plain.sidecar.read_text())["job"]
    assert job["encode_steps"] == 0
    again = run_line(model, job | {"out": str(tmp_path / "again.wav")})
    assert digest(again.audio) == digest(plain.audio)
    with pytest.raises(SpectrodiffError, match="encode_steps must be between 0 and 1000, got -1"):
        make_job(model, "remix", tmp_path / "bad.wav", audio=song, prompt="organ", encode_steps=-1)
    result = CliRunner().invoke(app, ["remix", str(song), "--prompt", "organ", "--encode-steps", "-1"])
    assert result.exit_code != 0 and "encode-steps" in result.output


@pytest.mark.parametrize("failure", ["image", "rename", "signal"])
def test_a_result_is_published_whole_or_not_at_all(pipe, tmp_path, monkeypatch, failure):
    """A full disk between the files, a failed rename, SIGTERM (a BaseException, as the command line raises it):
    none of the three files is left, nor a temporary one, and the same command then runs as if for the first time."""
    import os

    from spectrodiff.generation import output as output_module

    real_save, real_replace = output_module.save_image, os.replace

    def broken_save(*args, **kwargs):
        if failure == "signal":
            raise KeyboardInterrupt
        raise OSError(28, "No space left on device", str(args[0]))

    renames = []

    def broken_replace(src, dst):
        renames.append(dst)
        if len(renames) == 3:  # the audio and the PNG are in place: the sidecar's rename fails
            raise OSError(28, "No space left on device", str(src))
        real_replace(src, dst)

    if failure == "rename":
        monkeypatch.setattr(output_module.os, "replace", broken_replace)
    else:
        monkeypatch.setattr(output_module, "save_image", broken_save)
    with pytest.raises((SpectrodiffError, KeyboardInterrupt)) as error:
        make_job(pipe, "generate", tmp_path / "x.wav", prompt="x", seconds=1.0)
    assert ".tmp." not in str(error.value)  # the user's names, not the temporary ones
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(output_module, "save_image", real_save)
    monkeypatch.setattr(output_module.os, "replace", real_replace)
    result = make_job(pipe, "generate", tmp_path / "x.wav", prompt="x", seconds=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.png", "x.wav"] and result.seconds > 0


def test_a_long_loop_is_vocoded_in_pieces_and_still_wraps(monkeypatch):
    """Past LOOP_PERIOD_FRAMES a loop is streamed in pieces (bounded memory) over its period and its first frames
    again, crossfaded into its start: a tone loops without a jump, to the sample; without the crossfade (the
    control) it jumps at the wrap."""
    from spectrodiff import SpectrogramParams
    from spectrodiff.codec.mel import waveform_to_mel
    from spectrodiff.generation import takes

    params = SpectrogramParams(num_frequencies=64)
    frames = 600
    t = np.arange((frames + 3) * params.hop_length) / params.sample_rate
    tone = (0.5 * np.sin(2 * np.pi * 441 * t) + 0.3 * np.sin(2 * np.pi * 882 * t)).astype(np.float32)
    mel = waveform_to_mel(torch.from_numpy(tone)[None], params)[..., :frames]
    monkeypatch.setattr(takes, "LOOP_PERIOD_FRAMES", 256)
    monkeypatch.setattr(takes, "LOOP_PIECE_FRAMES", 128)

    def wrap_jump(audio: np.ndarray) -> float:
        return abs(float(audio[0, 0] - audio[0, -1])) / np.abs(np.diff(audio[0])).max()

    looped = takes.loop_audio(mel, params, None, 16)
    assert looped.shape == (1, frames * params.hop_length) and wrap_jump(looped) < 1.0
    monkeypatch.setattr(takes, "_crossfade", lambda old, new: new)
    assert wrap_jump(takes.loop_audio(mel, params, None, 16)) > 3
