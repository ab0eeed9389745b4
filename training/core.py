"""One training loop on accelerate for the three trainers: the UNet (`train.py`), the VAE decoder (`decoder.py`) and
the neural vocoder (`vocoder.py`).

A trainer describes its work as a `Task`: the updates of a step (each an optimizer and the loss it follows), its
batches, its validation, what a checkpoint holds besides weights and optimizers, and its output. `train_loop`
does the rest, the same way for all three:

- devices, processes and mixed precision by accelerate's `Accelerator`; gradient accumulation by
  `accelerator.accumulate`; clipping by `accelerator.clip_grad_norm_`;
- the learning rate by diffusers' `get_scheduler` (any of its schedules) or one of the trainers' own rules
  (`LR_RULES`: each trainer's default, so that its figures stay reproducible);
- OUT checked once: a fresh run needs a new or empty folder; `--resume latest` (or a checkpoint folder) a folder
  holding a run with the same record (`run.json`);
- checkpoints by `accelerator.save_state`/`load_state` in OUT/checkpoints/step-NNNNNN/; their hooks store the
  trainable weights alone (safetensors: frozen weights are never copied), the EMA and the step (`state.json`);
  accelerate adds the optimizers' and schedulers' states;
- the CSV and TensorBoard log (`TrainLog`), and at the end a check that every process holds the same weights.

Exact resume: nothing random is carried between steps. A step's data and noise come from generators seeded by
(seed, step, micro-batch, process) (`step_generator`) and its learning rate is a function of the step, so a run
resumed from a checkpoint ends (on CPU, with a fixed seed) with the weights of a run never interrupted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import pickle
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spectrodiff.errors import SpectrodiffError

from .options import LR_RULES, Schedule

CHECKPOINTS = "checkpoints"
LOG = "train_log.csv"
TENSORBOARD_DIR = "tensorboard"
RUN_FILE = "run.json"
STATE_FILE = "state.json"
TRAINABLE_FILE = "trainable.safetensors"
EMA_FILE = "ema.safetensors"
def _always(step: int) -> bool:
    return True


@dataclass
class Update:
    """One optimizer's part of a step: `loss(batch)` gives (objective, {log column: value}, "loss" among them); the
    objective's gradients, clipped to `clip`, move `params` (of `modules`) by `optimizer`. `active(step)`: whether
    it runs at that step."""

    optimizer: torch.optim.Optimizer
    modules: list[torch.nn.Module]  # as prepared: their gradients are synchronised across processes
    params: list[torch.nn.Parameter]
    loss: Callable[[Any], tuple[torch.Tensor, dict[str, float]]]
    clip: float = 1.0
    active: Callable[[int], bool] = _always
    scheduler: Any = None  # set by `start_loop`


class Task:
    """A trainer's part of a run. `train_loop` calls `prepare` once, then each step `batch` and the updates' losses;
    `validate` on the main process at the cadence; `finish` on the main process at the end."""

    columns: tuple[str, ...] = ("step", "lr", "loss", "val_loss", "elapsed_s")
    validation_column = "val_loss"

    def prepare(self, accelerator) -> list[Update]:
        """Build the optimizers, pass the modules and optimizers through `accelerator.prepare`, return the updates."""
        raise NotImplementedError

    def trainable(self) -> dict[str, torch.nn.Module]:
        """The unwrapped modules whose parameters that require grad a checkpoint holds, by name."""
        raise NotImplementedError

    def batch(self, step: int, micro: int, rank: int, world: int) -> Any:
        """The data of one micro-batch of one process (drawn from generators seeded by its step, micro, rank)."""
        raise NotImplementedError

    def validate(self, step: int) -> float | None:
        return None

    def row(self, step: int) -> dict:
        """Columns of the log's row for `step` that the task fills itself (e.g. the epoch)."""
        return {}

    def state(self) -> dict:
        """What a checkpoint's state.json keeps for the task besides the step (JSON-ready)."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def finish(self) -> None:
        """Save the output (main process, the weights averaged if EMA is on)."""
        raise NotImplementedError


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded by (seed, *keys): the same numbers for the same step whether or not a run resumed."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


# ---- the run folder ------------------------------------------------------------------------------------------------


def check_run(out: Path, resume: str | None, record: dict, resumable: tuple[str, ...] = ()) -> Path | None:
    """The checkpoint to resume from (None: start at step 0). A fresh run needs OUT new or empty; `--resume latest`
    a run in OUT whose record (run.json) matches `record` but for the `resumable` keys; a folder resumes from it."""
    out = Path(out)
    if resume is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SpectrodiffError(f"{out} is not an empty folder; pass --resume latest to continue its run, or "
                                   "choose another folder")
        return None
    if resume != "latest":
        folder = Path(resume)
        if not (folder / STATE_FILE).is_file():
            raise SpectrodiffError(f"--resume takes 'latest' or a checkpoint folder, got {resume!r}")
        return folder
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise SpectrodiffError(f"--resume latest: {out} holds no run to resume")
    saved = _read(run_file, lambda path: json.loads(path.read_text()))
    # An option newer than the saved run is not compared: the run was made before it existed.
    changed = [k for k in sorted(saved) if k not in resumable and saved.get(k) != record.get(k)]
    if changed:
        raise SpectrodiffError(f"--resume: {', '.join(changed)} differ from the run in {out}; use the same options")
    found = checkpoint_dirs(out)
    return found[-1] if found else None


def checkpoint_dirs(out: Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    dirs = [p for p in (Path(out) / CHECKPOINTS).glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))


def trainable_state(modules: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """`{"<module>.<name>": tensor}` of every parameter that requires grad (what a checkpoint holds)."""
    return {f"{prefix}.{name}": p.detach().cpu().contiguous() for prefix, module in modules.items()
            for name, p in module.named_parameters() if p.requires_grad}


def load_trainable(modules: dict[str, torch.nn.Module], state: dict[str, torch.Tensor]) -> None:
    params = {f"{prefix}.{name}": p for prefix, module in modules.items() for name, p in module.named_parameters()
              if p.requires_grad}
    if set(params) != set(state):
        raise SpectrodiffError("the checkpoint does not match this model (different base, config or LoRA rank)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def weights_digest(modules: dict[str, torch.nn.Module]) -> str:
    """sha256 of the trainable weights (names and float32 values): equal on every process of a healthy run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(modules).items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()


class EMA:
    """Exponential moving average of the trainable parameters, bias-corrected as Adam's moments are.

    `shadow` starts at zero and follows shadow = decay * shadow + (1 - decay) * param; the average after t updates
    is shadow / (1 - decay ** t). Starting from the initial weights instead would keep decay ** t of the random
    initialisation in the average (37 % after 1000 steps at 0.999).
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        self.params, self.decay, self.updates = params, decay, 0
        self.shadow = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in params.items()}
        self._live: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self) -> None:
        for k, p in self.params.items():
            self.shadow[k].lerp_(p.detach().float(), 1 - self.decay)
        self.updates += 1

    @torch.no_grad()
    def swap(self) -> None:
        """Put the averages into the model; the next call puts the live weights back. No-op before any update."""
        if self._live is None:
            if not self.updates:
                return
            self._live = {k: p.detach().clone() for k, p in self.params.items()}
            correction = 1 - self.decay ** self.updates
            for k, p in self.params.items():
                p.copy_((self.shadow[k] / correction).to(p.dtype))
        else:
            for k, p in self.params.items():
                p.copy_(self._live[k])
            self._live = None


class TrainLog:
    """Losses to OUT/train_log.csv and to TensorBoard event files in OUT/tensorboard (written with tensorboardX,
    which has the event format without TensorBoard's server stack). A resumed run first drops what a killed run
    logged past its last checkpoint, in both."""

    def __init__(self, out: Path, resumed_step: int, columns: tuple[str, ...]):
        from tensorboardX import SummaryWriter

        self.path, self.columns = Path(out) / LOG, columns
        rows = []
        if resumed_step and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_step]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        self.board = SummaryWriter(str(Path(out) / TENSORBOARD_DIR), purge_step=resumed_step + 1 if resumed_step
                                   else None)

    def row(self, **row) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: ("" if v is None else v) for k, v in row.items()})
        for name in self.columns:
            if name not in ("step", "epoch", "elapsed_s") and row.get(name) not in (None, ""):
                self.board.add_scalar(f"train/{name}", float(row[name]), row["step"])
        self.board.flush()

    def close(self) -> None:
        self.board.close()


def read_log(out: Path) -> list[dict]:
    with (Path(out) / LOG).open(newline="") as f:
        return list(csv.DictReader(f))


# ---- the loop ------------------------------------------------------------------------------------------------------


def learning_rate_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, processes: int):
    """The run's schedule over `optimizer`. accelerate steps a prepared scheduler once per process at every optimizer
    step, so it counts `processes` times faster than the optimizer (as diffusers' training scripts allow for)."""
    from diffusers.optimization import get_scheduler

    if schedule.lr_schedule in LR_RULES:
        rule = LR_RULES[schedule.lr_schedule]
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda count: rule(count // processes, schedule.warmup_steps, schedule.max_steps))
    return get_scheduler(schedule.lr_schedule, optimizer, num_warmup_steps=schedule.warmup_steps * processes,
                         num_training_steps=schedule.max_steps * processes)


def save_checkpoint(accelerator, out: Path, step: int, keep: int) -> Path:
    """`accelerator.save_state` into OUT/checkpoints/step-NNNNNN/ (written under another name, then renamed, so
    that a killed run never leaves half a checkpoint), keeping the newest `keep`. Every process calls it."""
    final = Path(out) / CHECKPOINTS / f"step-{step:06d}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in checkpoint_dirs(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _register_state_hooks(accelerator, task: Task, ema: EMA | None, progress: dict) -> None:
    """What save_state and load_state do with the models: the trainable weights alone as safetensors (not every
    frozen weight, as a LoRA run's base), the EMA's averages and the step in state.json; no pickles."""

    def save(models: list, weights: list, folder: str) -> None:
        weights.clear()  # accelerate would save whole models
        if not accelerator.is_main_process:
            return
        folder = Path(folder)
        save_file(trainable_state(task.trainable()), str(folder / TRAINABLE_FILE))
        if ema is not None:
            save_file({k: v.cpu().contiguous() for k, v in ema.shadow.items()}, str(folder / EMA_FILE))
        state = {"step": progress["step"], "ema_updates": ema.updates if ema else 0, **task.state()}
        (folder / STATE_FILE).write_text(json.dumps(state) + "\n")

    def load(models: list, folder: str) -> None:
        models.clear()
        folder = Path(folder)
        state = _read(folder / STATE_FILE, lambda path: json.loads(path.read_text()))
        weights = _read(folder / TRAINABLE_FILE, lambda path: load_file(str(path)))
        shadow = _read(folder / EMA_FILE, lambda path: load_file(str(path))) if ema is not None else None
        try:
            load_trainable(task.trainable(), weights)
            if ema is not None:
                for k in ema.shadow:
                    ema.shadow[k].copy_(shadow[k])
                ema.updates = int(state["ema_updates"])
            task.load_state(state)
            progress["step"] = int(state["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SpectrodiffError(f"cannot resume from {folder}: {exc}") from None

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


# Damaged files: truncated or overwritten safetensors, torch zips and pickles, JSON.
DAMAGED = (OSError, ValueError, KeyError, EOFError, RuntimeError, pickle.UnpicklingError, SafetensorError)
# What accelerate's load_state reads after our hook, in order, each closed by the message it logs.
ACCELERATE_FILES = (("optimizer*.bin", "All optimizer states loaded successfully"),
                    ("scheduler*.bin", "All scheduler states loaded successfully"),
                    ("scaler.pt", "GradScaler state loaded successfully"))


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    """`reader(path)`, or a SpectrodiffError naming the checkpoint file that cannot be read."""
    try:
        return reader(path)
    except DAMAGED as exc:
        raise SpectrodiffError(f"cannot resume: {path} is missing or damaged ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    return str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__


def _loads(path: Path) -> bool:
    """Whether accelerate can read the file `path` (its load, on the CPU)."""
    from accelerate.utils import load

    try:
        load(path, map_location="cpu")
    except DAMAGED:
        return False
    return True


def _load_state(accelerator, checkpoint: Path) -> None:
    """`accelerator.load_state`, with a warning when the random states do not load: accelerate goes on without them
    and says so only at INFO level, and the run would not repeat exactly. A damaged file is a SpectrodiffError
    naming it (accelerate's messages name none)."""
    heard: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: heard.append(record.getMessage())
    logger = logging.getLogger("accelerate.checkpointing")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        accelerator.load_state(str(checkpoint))
    except DAMAGED as exc:
        pattern = next((files for files, done in ACCELERATE_FILES if not any(done in m for m in heard)), "*")
        files = sorted(Path(checkpoint).glob(pattern))
        named = next((path for path in files if not _loads(path)), None)  # of several, the one that fails
        names = str(named) if named else " or ".join(map(str, files)) or f"{checkpoint}/{pattern}"
        raise SpectrodiffError(f"cannot resume: {names} is missing or damaged ({_first_line(exc)})") from None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if any("Could not load random states" in message for message in heard):
        warnings.warn(f"{checkpoint}: its random states could not be read; resuming without them, so the run will "
                      "not repeat exactly", stacklevel=2)


@dataclass
class Loop:
    """A started run: the accelerator and what `train_loop` keeps between steps."""

    accelerator: Any
    task: Task
    schedule: Schedule
    out: Path
    updates: list[Update]
    ema: EMA | None
    progress: dict  # {"step": the last finished step}, which the checkpoint hooks save and load
    log: TrainLog | None  # None on every process but the main one

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def say(self, line: str) -> None:
        if self.main:
            self.schedule.log(line)

    def lr(self) -> float:
        return self.updates[-1].optimizer.param_groups[0]["lr"]

    def validate(self, step: int) -> float | None:
        """The task's validation value at `step` (main process; with EMA, of the averaged weights)."""
        if not self.main:
            return None
        if self.ema is not None:
            self.ema.swap()
        value = self.task.validate(step)
        if self.ema is not None:
            self.ema.swap()
        return value


def start_loop(task: Task, schedule: Schedule, out: Path, checkpoint: Path | None, record: dict) -> Loop:
    """The accelerator, the task's updates and their schedulers, the EMA, the checkpoint hooks, the state of
    `checkpoint` if any, run.json and the log."""
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=schedule.grad_accum,
                              mixed_precision=schedule.mixed_precision, cpu=schedule.device == "cpu")
    accelerator.wait_for_everyone()  # every process has looked at OUT before the main one writes there
    updates = task.prepare(accelerator)
    for update in updates:
        update.scheduler = accelerator.prepare(learning_rate_scheduler(update.optimizer, schedule,
                                                                       accelerator.num_processes))
    trainable = {f"{prefix}.{n}": p for prefix, module in task.trainable().items()
                 for n, p in module.named_parameters() if p.requires_grad}
    ema = EMA(trainable, schedule.ema) if schedule.ema else None
    progress = {"step": 0}
    _register_state_hooks(accelerator, task, ema, progress)
    loop = Loop(accelerator, task, schedule, out, updates, ema, progress, None)
    if checkpoint is not None:
        _load_state(accelerator, checkpoint)
        loop.say(f"resuming from {checkpoint} (step {progress['step']})")
    if loop.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        loop.log = TrainLog(out, progress["step"], task.columns)
    return loop


def train_step(accelerator, task: Task, updates: list[Update], step: int, grad_accum: int) -> dict[str, float]:
    """One optimizer step of every active update over `grad_accum` micro-batches (accelerate accumulates the
    gradients and steps the optimizers at the last one); the learning-rate schedulers step along. Returns the
    mean over the micro-batches of each loss column the updates report ("loss" among them)."""
    rank, world = accelerator.process_index, accelerator.num_processes
    models = list({id(m): m for update in updates for m in update.modules}.values())
    parts: dict[str, float] = {}
    for micro in range(grad_accum):
        with accelerator.accumulate(*models):
            with accelerator.autocast():
                batch = task.batch(step, micro, rank, world)
            for update in updates:
                if update.active(step):
                    with accelerator.autocast():
                        objective, values = update.loss(batch)
                    accelerator.backward(objective)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(update.params, update.clip)
                    update.optimizer.step()
                    update.optimizer.zero_grad(set_to_none=True)
                    for name, value in values.items():
                        parts[name] = parts.get(name, 0.0) + value / grad_accum
                with warnings.catch_warnings():  # an update not yet active still follows the schedule
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
                    update.scheduler.step()
    return parts


def _after_step(loop: Loop, step: int, rate: float, parts: dict[str, float], began: float) -> float:
    """The bookkeeping of finished step `step`: EMA, the loss averaged over the processes (returned), validation,
    the log row and line, the checkpoint."""
    schedule, task, accelerator = loop.schedule, loop.task, loop.accelerator
    loop.progress["step"] = step
    if loop.ema is not None:
        loop.ema.update()
    loss = float(accelerator.gather(torch.tensor([parts["loss"]], device=accelerator.device)).mean())
    val = loop.validate(step) if step % schedule.validate_every == 0 or step == schedule.max_steps else None
    if loop.main:
        loop.log.row(**{k: f"{v:.6f}" for k, v in parts.items()} | {
            "step": step, "lr": f"{rate:.3g}", "loss": f"{loss:.6f}", task.validation_column: _fmt(val),
            "elapsed_s": f"{time.monotonic() - began:.1f}"} | task.row(step))
    if step % schedule.log_every == 0 or val is not None:
        loop.say(f"step {step}/{schedule.max_steps} loss {loss:.4f}"
                 + (f" {task.validation_column} {val:.4f}" if val is not None else ""))
    if step % schedule.checkpoint_every == 0 or step == schedule.max_steps:
        save_checkpoint(accelerator, loop.out, step, schedule.keep_checkpoints)
    return loss


def train_loop(task: Task, schedule: Schedule, out: Path, resume: str | None, record: dict,
               resumable: tuple[str, ...] = ()) -> dict:
    """Train `task` to `schedule.max_steps`, from step 0 or from a checkpoint (`check_run`). Returns steps, the
    last loss, the validation values, the processes and the sha256 of the final weights (equal on all of them)."""
    out = Path(out)
    loop = start_loop(task, schedule, out, check_run(out, resume, record, resumable), record)
    task, accelerator, step = loop.task, loop.accelerator, loop.progress["step"]
    began, loss = time.monotonic(), None
    if step == 0 and loop.main:
        loop.log.row(step=0, lr=f"{loop.lr():.3g}", elapsed_s="0.0",
                     **{task.validation_column: _fmt(loop.validate(0))}, **task.row(0))
    while step < schedule.max_steps:
        rate = loop.lr()
        parts = train_step(accelerator, task, loop.updates, step, schedule.grad_accum)
        step += 1
        loss = _after_step(loop, step, rate, parts, began)

    digest = _agreed_digest(accelerator, task)
    if loop.main:
        loop.log.close()
        if loop.ema is not None:
            loop.ema.swap()
        task.finish()
    accelerator.wait_for_everyone()
    values = [float(r[task.validation_column]) for r in read_log(out) if r[task.validation_column]]
    return {"steps": step, "last_loss": loss, "val": values, "out": str(out), "processes": accelerator.num_processes,
            "weights_sha256": digest}


def _agreed_digest(accelerator, task: Task) -> str:
    """The final weights' digest, checked equal on every process (a mismatch means the processes trained apart)."""
    digest = weights_digest(task.trainable())
    if accelerator.num_processes > 1:
        mine = torch.tensor([int(digest[:15], 16)], dtype=torch.int64, device=accelerator.device)
        every = accelerator.gather(mine).tolist()
        accelerator.print(f"{accelerator.num_processes} processes; final weights sha256 {digest[:16]} on process "
                          f"0, {'the same on all' if len(set(every)) == 1 else 'DIFFERENT on some'}")
        print(f"process {accelerator.process_index}: final weights sha256 {digest}", flush=True)
        if len(set(every)) != 1:
            raise SpectrodiffError("the processes ended with different weights")
    return digest


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.6f}"
