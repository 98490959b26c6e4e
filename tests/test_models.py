"""One contract test for every network family, in 2D and 3D: any input size, right output shape,
gradients reaching every parameter; plus the deep-supervision list and registry errors."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ConfigError
from medseg.model.plan import NetworkConfig
from medseg.networks import FAMILIES, build_model

CONFIGS = {
    3: NetworkConfig((16, 16, 16), 2, (4, 8, 16), ((3, 3, 3),) * 3, ((1, 1, 1), (2, 2, 2), (2, 2, 1))),
    2: NetworkConfig((16, 16), 2, (4, 8, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2))),
}
ODD_SIZES = {3: (19, 23, 17), 2: (37, 29)}
CASES = [(family, dims) for family in FAMILIES for dims in (3, 2)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("family,dims", CASES)
def test_any_input_size_gives_input_shaped_logits_and_gradients_everywhere(family: str, dims: int) -> None:
    net = build_model(family, dims, 2, 3, CONFIGS[dims], deep_supervision=True).train()
    x = torch.randn(2, 2, *ODD_SIZES[dims])
    outputs = net(x)
    assert isinstance(outputs, list) and len(outputs) >= 2
    assert outputs[0].shape == (2, 3, *ODD_SIZES[dims])
    sum(o.square().mean() for o in outputs).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    net.eval()
    with torch.no_grad():
        logits = net(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3, *ODD_SIZES[dims])


@pytest.mark.parametrize("family,dims", CASES)
def test_deep_supervision_outputs_shrink_and_cover_the_input(family: str, dims: int) -> None:
    net = build_model(family, dims, 1, 2, CONFIGS[dims], deep_supervision=True).train()
    size = ODD_SIZES[dims]
    shapes = [tuple(o.shape[2:]) for o in net(torch.randn(1, 1, *size))]
    # with these configs every lower output sits at stage 1 (stride 2 on every axis): ceil(size / 2)
    assert shapes[0] == size
    assert shapes[1:] and all(s == tuple(-(-v // 2) for v in size) for s in shapes[1:])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_without_deep_supervision_training_returns_one_tensor(family: str) -> None:
    net = build_model(family, 2, 1, 2, CONFIGS[2]).train()
    out = net(torch.randn(1, 1, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 16, 16)


def test_unknown_family_names_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'segnet'"):
        build_model("segnett", 3, 1, 2, CONFIGS[3])


def test_a_2d_config_for_a_3d_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="3D model needs a 3D network config"):
        build_model("unet", 3, 1, 2, CONFIGS[2])


def test_same_seed_same_weights() -> None:
    torch.manual_seed(1)
    a = build_model("resenc_unet", 3, 1, 2, CONFIGS[3]).state_dict()
    torch.manual_seed(1)
    b = build_model("resenc_unet", 3, 1, 2, CONFIGS[3]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
