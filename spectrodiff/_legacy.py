"""Module paths from before the package had subfolders (spectrodiff.params, spectrodiff.pipeline, ...), kept
importable: model folders saved then name `spectrodiff.params.SpectrogramParams` and
`spectrodiff.vocoder.NeuralVocoder` as components, and users' scripts import the old paths.

An old path imports as a module holding the names of the modules that replaced it, and the old names of those
modules' renamed classes (`RENAMED`): later ones win, so the two that model folders name are the diffusers
components."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types

MOVED = {
    "audio": ("codec.audio",),
    "mel": ("codec.mel",),
    "image": ("codec.image",),
    "params": ("codec.params", "generation.components"),
    "convert": ("codec.convert", "vocoding.render"),
    "griffin_lim": ("vocoding.stft", "vocoding.griffin_lim"),
    "reconstruct": ("vocoding.reconstruct",),
    "mel_refine": ("vocoding.refine",),
    "vocoder": ("vocoding.vocoder", "vocoding.registry", "generation.components"),
    "pipeline": ("generation.pipeline",),
    "generate": ("generation.modes",),
    "timeline": ("generation.timeline",),
    "plans": ("generation.plans",),
    "batch": ("generation.batch",),
}
PREFIX = "spectrodiff."


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `spectrodiff.<old>` for each old path in MOVED and builds it from the new modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(PREFIX) and fullname[len(PREFIX):] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a plain module

    def exec_module(self, module: types.ModuleType) -> None:
        for new in MOVED[module.__name__[len(PREFIX):]]:
            source = importlib.import_module(PREFIX + new)
            module.__dict__.update({k: v for k, v in vars(source).items() if not k.startswith("__")})
            module.__dict__.update(getattr(source, "RENAMED", {}))


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
