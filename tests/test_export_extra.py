"""``medseg export`` without the packages of the ``fast`` extra: exit 2 with an install hint.

The packages are hidden (``find_spec`` answers None, imports fail), so this runs with the extra installed too."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from medseg.cli import main
from tests.inference_stubs import make_plan, save_random_model


def hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``names`` look uninstalled: ``importlib.util.find_spec`` finds nothing, ``import`` fails."""
    find_spec = importlib.util.find_spec

    def hidden(name: str, *args, **kwargs):
        return None if name.split(".")[0] in names else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    for name in list(sys.modules):
        if name.split(".")[0] in names:
            monkeypatch.delitem(sys.modules, name)
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("m") / "model", make_plan(patch=(16, 24, 16)))


@pytest.mark.parametrize(
    "hidden, args, named",
    [
        (("onnx", "onnxscript", "onnxruntime", "openvino"), [], "onnx package"),
        (("onnxscript",), ["--dynamic-spatial"], "onnxscript package"),
    ],
)
def test_export_without_the_fast_extra_exits_2_with_an_install_hint(
    model, tmp_path, capsys, monkeypatch, hidden, args, named
) -> None:
    hide(monkeypatch, *hidden)
    out = tmp_path / "onnx"
    assert main(["-q", "export", "-m", str(model), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" not in err
    assert named in err and "pip install 'medseg[fast]'" in err
    assert not out.exists()  # checked before anything is written
