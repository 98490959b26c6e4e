"""The benchmark scripts in benchmarks/ (run from the checkout, never installed) keep working when
medseg's internals move: every script imports, answers ``--help``, and every medseg name it
imports, also inside functions (which ``--help`` never runs), exists. The benchmarks themselves
are not run here."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

from benchmarks.repo import ROOT, repo_path

SCRIPTS = sorted(p.stem for p in repo_path("benchmarks").glob("*.py") if p.stem not in ("__init__", "repo", "report"))


def imported_names(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from medseg... / benchmarks... import name`` in ``path``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("medseg", "benchmarks"):
            names += [(node.module, alias.name) for alias in node.names]
    return names


def test_the_benchmarks_are_found_in_the_checkout() -> None:
    assert Path(__file__).resolve().parents[1] == ROOT
    assert {"batch", "inference", "nifti_io", "nnunet", "read_dicom", "train_hippocampus"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_answers_help(script: str, capsys) -> None:
    module = importlib.import_module(f"benchmarks.{script}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "--no-doc" in capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_imported_medseg_name_exists(script: str) -> None:
    missing = []
    for module_name, name in imported_names(repo_path("benchmarks", f"{script}.py")):
        module = importlib.import_module(module_name)
        if not hasattr(module, name) and importlib.util.find_spec(f"{module_name}.{name}") is None:
            missing.append(f"{module_name}.{name}")
    assert missing == []
