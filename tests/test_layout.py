"""The package's layout follows the data flow: codec -> vocoding -> generation, never backwards, and generation never
reaches into training or the web studio. Each subpackage says what it holds."""

import ast
import importlib
from pathlib import Path

import pytest

import spectrodiff

PACKAGE = Path(spectrodiff.__file__).parent
# What each subpackage may import from spectrodiff (its own modules aside).
ALLOWED = {
    "codec": {"errors", "files", "settings"},
    "vocoding": {"errors", "files", "settings", "bundled", "codec"},
    # Not metrics: the yardstick stays apart from what it measures.
    "generation": {"errors", "files", "settings", "bundled", "codec", "vocoding", "__version__"},
}


def spectrodiff_imports(path: Path, package: str) -> set[str]:
    """The spectrodiff subpackages or top-level modules a file imports (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] if node.module or not node.level else [f"{name}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("spectrodiff.")}
    return found


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_imports_follow_the_data_flow(subpackage):
    for path in sorted((PACKAGE / subpackage).glob("*.py")):
        imported = spectrodiff_imports(path, f"spectrodiff.{subpackage}") - {subpackage}
        assert imported <= ALLOWED[subpackage], f"{path.name} imports {sorted(imported - ALLOWED[subpackage])}"


def test_the_import_check_sees_a_wrong_way_import(tmp_path):
    """Control: the check catches a codec module that reaches into generation."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..generation.pipeline import SpectrodiffPipeline\nfrom . import mel\n")
    assert spectrodiff_imports(bad, "spectrodiff.codec") == {"generation", "codec"}


@pytest.mark.parametrize("subpackage", ["codec", "vocoding", "generation", "training", "web"])
def test_every_subpackage_says_what_it_holds(subpackage):
    doc = importlib.import_module(f"spectrodiff.{subpackage}").__doc__
    assert doc and len(doc.split()) >= 15, subpackage


def test_training_installs_inside_the_package():
    """The distribution's only top-level package is spectrodiff: training/ installs as spectrodiff.training, so no
    package named `training` lands in site-packages."""
    from importlib.metadata import distribution

    import spectrodiff.training

    assert Path(spectrodiff.training.__file__).parent.name == "training"
    assert distribution("spectrodiff").read_text("top_level.txt").split() == ["spectrodiff"]


# Names of files that live beside the repository, not in it (spelt in two pieces so that this file does not match).
OUTSIDE = ("DESIGN" + ".md", "../" + "shared")
ROOT = PACKAGE.parent


def names_outside(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    return [name for name in OUTSIDE if name in text]


def test_the_repository_names_no_file_outside_it(tmp_path):
    """A contributor who clones the project can follow every reference: code, tests, benchmarks and docs name no
    file beside the repository. Control: a file that does is found."""
    files = [p for folder in ("spectrodiff", "training", "tests", "benchmarks", "docs", "prompts", ".ci")
             for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".txt", "")]
    files += [ROOT / name for name in ("README.md", "CONTRIBUTING.md", "Makefile", "pyproject.toml")]
    assert len(files) > 50
    assert {str(p.relative_to(ROOT)): names_outside(p) for p in files if names_outside(p)} == {}
    control = tmp_path / "notes.py"
    control.write_text(f"# see {OUTSIDE[0]} section 5\n")
    assert names_outside(control) == [OUTSIDE[0]]
