"""The job declarations (spectrodiff/generation/jobs.py, on spectrodiff/settings.py) are the one place a mode's
settings live: the command line, batch lines, the HTTP API, the studio and the sidecar all take them from there and
word a bad value alike."""

import inspect
import json
import math
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError
from typer.testing import CliRunner

from spectrodiff import SpectrodiffError
from spectrodiff.cli import app
from spectrodiff.generation.batch import line_job
from spectrodiff.generation.jobs import JOBS, GenerateJob, Keyframe, job_from_dict
from spectrodiff.generation.modes import MODES
from spectrodiff.settings import REQUIRED, check_value, cli_parameters, error_line, range_words, setting, spec_of
from spectrodiff.web import Studio, create_app
from spectrodiff.web.api import request_body, request_model, upload_parameters
from spectrodiff.web.service import SERVER_CONTROLLED, SERVER_HIGHS

# The fields each mode requires, filled in.
REQUIRED_VALUES = {
    "generate": {"prompt": "jazzy saxophone"},
    "morph": {"keyframes": [{"prompt": "bells"}, {"prompt": "beats", "seed": 2}]},
    "compose": {"keyframes": [{"prompt": "bells", "seconds": 3}]},
    "remix": {"audio": "song.wav", "prompt": "organ"},
    "extend": {"audio": "song.wav", "prompt": "drums", "seconds": 2},
    "inpaint": {"audio": "song.wav", "prompt": "fill", "start": 1, "end": 2},
    "riffuse": {"start": {"prompt": "a"}, "end": {"prompt": "b"}, "seed_image": "seed.png"},
}


class SwingJob(GenerateJob):
    """A mode with one more setting, declared as a contributor would add it."""

    swing: float = setting(0.0, "Delay of every second 16th note, as a share of it.", low=0, high=0.75)


def test_every_mode_has_a_declaration_and_every_setting_its_help():
    assert set(JOBS) == set(MODES)
    for mode, job in JOBS.items():
        for name, f in job.model_fields.items():
            assert spec_of(f).help, f"{mode}.{name} has no help"


@pytest.mark.parametrize("mode", sorted(JOBS))
def test_a_job_round_trips_through_its_dictionary(mode):
    job = job_from_dict({"mode": mode, **REQUIRED_VALUES[mode]})
    data = job.to_dict()
    assert data["mode"] == mode and json.loads(json.dumps(data)) == data
    assert job_from_dict(data) == job


@pytest.mark.parametrize("mode", sorted(JOBS))
def test_every_face_takes_every_setting(mode):
    """The command line, the API's requests and the studio's controls are made from the declaration."""
    from spectrodiff.web.studio import control

    command = typer.main.get_command(app).commands.get(mode)  # riffuse is the API's alone
    options = {p.name for p in command.params} if command else set()
    uploads = mode in ("remix", "extend", "inpaint")
    api = {p.name for p in upload_parameters(mode)} if uploads else set(request_model(mode).model_fields)
    for name, f in JOBS[mode].model_fields.items():
        spec = spec_of(f)
        if command is not None and spec.cli != "":
            assert name in options, f"spectrodiff {mode} lacks {name}"
        if name not in SERVER_CONTROLLED and not (uploads and name == "audio") and f.annotation not in (Path,
                                                                                                       Path | None):
            assert name in api, f"POST /api/{mode} lacks {name}"
        if spec.high is not None and f.annotation in (int, float) and mode != "riffuse":
            assert control(mode, name).maximum == min(SERVER_HIGHS.get(name, spec.high), spec.high), \
                f"the studio's {name}: the command line's range, or the server's where it is tighter"


def test_a_new_setting_is_one_declaration(monkeypatch):
    """Adding a field to a job class puts it on the command line (with its range in --help), in the API's schema and
    requests, in batch lines, in the studio and in the sidecar's job, each checking it the same way."""
    monkeypatch.setitem(JOBS, "generate", SwingJob)
    option = next(p for p in cli_parameters(SwingJob) if p.name == "swing")
    assert option.default == 0.0 and "between 0 and 0.75" in option.annotation.__metadata__[0].help
    assert swing_on_the_command_line("--swing", "0.5") == (0, "0.5\n")
    assert swing_on_the_command_line("--swing", "0.9") == (2, "--swing must be between 0 and 0.75, got 0.9")
    schema = request_model("generate").model_json_schema()["properties"]["swing"]
    assert (schema["default"], schema["minimum"], schema["maximum"]) == (0.0, 0, 0.75)
    request = TypeAdapter(request_body("generate"))
    assert request.validate_python({"prompt": "funk", "swing": 0.5}).swing == 0.5
    with pytest.raises(ValidationError) as refused:
        request.validate_python({"prompt": "funk", "swing": 0.9})
    assert error_line(refused.value, SwingJob) == "swing must be between 0 and 0.75, got 0.9"
    job = line_job({"mode": "generate", "prompt": "funk", "swing": 0.5})
    assert list(job.to_dict())[:6] == ["mode", "prompt", "seed", "guidance", "negative", "seconds"]
    assert job.to_dict()["swing"] == 0.5 and list(job.to_dict())[-6:] == ["swing", "steps", "scheduler", "iters",
                                                                          "vocoder", "sample_rate"]
    assert studio_settings()["swing"].maximum == 0.75
    with pytest.raises(SpectrodiffError, match=r"^swing must be between 0 and 0.75, got 0.9$"):
        line_job({"mode": "generate", "prompt": "funk", "swing": 0.9})
    # Control: without the declaration the field is unknown everywhere.
    monkeypatch.setitem(JOBS, "generate", GenerateJob)
    assert "swing" not in request_model("generate").model_json_schema()["properties"]
    with pytest.raises(SpectrodiffError, match="unknown field 'swing'"):
        line_job({"mode": "generate", "prompt": "funk", "swing": 0.5})
    assert "swing" not in studio_settings()
    assert "swing" not in {p.name for p in cli_parameters(GenerateJob)}


def swing_on_the_command_line(*args: str) -> tuple[int, str]:
    """A command whose options are SwingJob's, as `spectrodiff generate` makes its own: (exit code, output)."""
    command_line = typer.Typer()

    def swing(**values) -> None:
        try:
            print(SwingJob.from_dict(values, flag=True).swing)
        except SpectrodiffError as exc:
            raise typer.BadParameter(str(exc)) from None

    swing.__signature__ = inspect.Signature(cli_parameters(SwingJob))
    command_line.command()(swing)
    result = CliRunner().invoke(command_line, ["funk", *args])
    return result.exit_code, result.output if result.exit_code == 0 else result.output.split("Invalid value: ")[-1]\
        .split("\n")[0].rstrip(" │")


def studio_settings() -> dict:
    """The studio's "More settings" controls of the Generate tab, by setting."""
    import gradio as gr

    from spectrodiff.web.studio import more_settings

    with gr.Blocks():
        return more_settings(("generate",), {"prompt"})


@pytest.mark.parametrize("value, kind, message", [
    (-1, int, "seed must be between 0 and 4294967295, got -1"),
    (2**32, int, "seed must be between 0 and 4294967295, got 4294967296"),
    (1.5, int, "seed must be a whole number, got 1.5"),
    (True, int, "seed must be a whole number, got True"),
    ("3", int, "seed must be a whole number, got '3'"),
    (math.nan, float, "seed is not a number, got nan"),
    (math.inf, float, "seed is not a number, got inf"),
    (None, int, "seed is required"),
])
def test_check_words_every_bad_value(value, kind, message):
    spec = spec_of(GenerateJob.model_fields["seed"])
    with pytest.raises(SpectrodiffError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        check_value("seed", value, kind, spec)
    assert check_value("seed", 7, int, spec) == 7  # control: a good value passes unchanged


def test_ranges_read_as_words():
    fields = GenerateJob.model_fields
    assert range_words(spec_of(fields["seconds"])) == "in (0, 600]"
    assert range_words(spec_of(fields["steps"])) == "between 1 and 1000"
    assert range_words(spec_of(fields["steps"]), high=100) == "between 1 and 100"
    assert range_words(spec_of(fields["prompt"]), text=True) == "at most 1000 characters"
    with pytest.raises(SpectrodiffError, match="prompt is empty"):
        GenerateJob(prompt="  ")
    with pytest.raises(SpectrodiffError, match="prompt is 1001 characters; at most 1000 characters"):
        GenerateJob(prompt="x" * 1001)


def test_keyframes_are_checked_field_by_field():
    with pytest.raises(SpectrodiffError, match="keyframe 2: strength must be in \\(0, 1\\], got 0"):
        job_from_dict({"mode": "morph", "keyframes": [{"prompt": "a"}, {"prompt": "b", "strength": 0}]})
    with pytest.raises(SpectrodiffError, match="keyframe 1: unknown field 'sed'"):
        job_from_dict({"mode": "morph", "keyframes": [{"prompt": "a", "sed": 1}, {"prompt": "b"}]})
    with pytest.raises(SpectrodiffError, match="keyframes: give between 2 and 64 keyframes, got 1"):
        job_from_dict({"mode": "morph", "keyframes": [{"prompt": "a"}]})
    with pytest.raises(SpectrodiffError, match="the keyframes' seconds add up to 700; at most 600"):
        job_from_dict({"mode": "compose", "keyframes": [{"prompt": "a", "seconds": 350}] * 2})
    assert Keyframe("a", seed=3) == Keyframe.from_dict({"prompt": "a", "seed": 3})


def test_one_bad_value_reads_alike_on_every_face(tmp_path, model_dir, pipe):
    """The command line names the option, the others the field; the words after it are the same."""
    words = "must be between 1 and 1000, got 5000"
    cli = CliRunner().invoke(app, ["generate", "x", "--steps", "5000", "--model", str(model_dir), "-o",
                                   str(tmp_path / "a.wav")])
    assert cli.exit_code == 2 and f"--steps {words}" in cli.output
    lines = tmp_path / "jobs.jsonl"
    lines.write_text(json.dumps({"mode": "generate", "prompt": "x", "out": str(tmp_path / "b.wav")}) + "\n" +
                     json.dumps({"mode": "generate", "prompt": "x", "steps": 5000}) + "\n")
    batch = CliRunner().invoke(app, ["batch", str(lines), "--model", str(model_dir)])
    assert batch.exit_code == 1 and f"jobs.jsonl line 2: steps {words}" in batch.output
    lines.unlink()
    with TestClient(create_app(Studio(pipe))) as client:
        response = client.post("/api/generate", json={"prompt": "x", "steps": 5000})
        assert response.status_code == 422
        assert response.json()["detail"] == "steps must be between 1 and 100, got 5000"  # the server's own limit
        response = client.post("/api/generate", json={"prompt": "x", "steps": 0})
        assert response.json()["detail"] == "steps must be between 1 and 100, got 0"
    assert not any(tmp_path.iterdir())


def test_required_settings_have_no_default():
    for mode, values in REQUIRED_VALUES.items():
        required = {name for name, f in JOBS[mode].model_fields.items() if f.default is REQUIRED}
        assert required == set(values), mode
        for name in required:
            with pytest.raises(SpectrodiffError, match=f"{name} is required"):
                job_from_dict({"mode": mode, **{k: v for k, v in values.items() if k != name}})


def test_paths_survive_the_sidecar():
    job = job_from_dict({"mode": "remix", "audio": "in/song.wav", "prompt": "organ"})
    assert job.audio == Path("in/song.wav") and job.to_dict()["audio"] == "in/song.wav"


def test_a_sidecars_job_keeps_its_fields_and_their_order():
    """Old sidecars and batch files redo their results: the record of a job is as it was (settings in declaration
    order, how it renders last; the length worked out from the tempo; the key spelled out)."""
    job = job_from_dict({"mode": "generate", "prompt": "funk", "bpm": 120, "seconds": 9.5, "key": "f minor"})
    assert json.dumps(job.to_dict()) == (
        '{"mode": "generate", "prompt": "funk", "seed": 0, "guidance": 7.0, "negative": "", "seconds": 10.0, '
        '"loop": true, "bpm": 120.0, "bars": 5, "key": "F minor", "meter": "4/4", "chords": null, "steps": 25, '
        '"scheduler": null, '
        '"iters": 32, "vocoder": null, "sample_rate": null}')
    inpaint = job_from_dict({"mode": "inpaint", "audio": "in/take.wav", "prompt": "fill", "start": 1, "end": 2})
    assert json.dumps(inpaint.to_dict()) == (
        '{"mode": "inpaint", "audio": "in/take.wav", "prompt": "fill", "seed": 0, "guidance": 7.0, "negative": "", '
        '"bpm": null, "start": 1.0, "end": 2.0, "steps": 25, "scheduler": null, "iters": 32, "vocoder": null, '
        '"sample_rate": null, '
        '"encode_steps": null}')


def test_replace_checks_and_works_the_length_out_again():
    """`replace` checks its values as a new job would (pydantic's model_copy does not), and what the job worked out
    from its settings (bars from seconds) follows the change."""
    job = GenerateJob(prompt="funk", bpm=120, seconds=9.5)
    assert (job.replace(seed=3).seed, job.replace(seed=3).bars) == (3, 5)
    assert job.replace(bpm=60).bars == 2  # 4 s bars: 9.5 s is nearest 2 of them
    with pytest.raises(SpectrodiffError, match="^seed must be between 0 and 4294967295, got 4294967296$"):
        job.replace(seed=2**32)
    assert job.model_copy(update={"seed": 2**32}).seed == 2**32  # the control: model_copy takes anything
