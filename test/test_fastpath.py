"""Segmenter.render_batch: message-ready outputs, the device pipeline and the CUDA fast path.

The device pipeline (ssnet_ros.core.render.render_packed) is checked on the CPU against the numpy
drawing; the CUDA-only parts (pinned copies, fp16 + channels_last, CUDA graphs) run only
where CUDA is present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ssnet_ros import SSNetError, Segmenter
from ssnet_ros.core.render import OUTPUT_KEYS, DeviceTables, render_numpy, render_packed, unpack
from ssnet_ros.core.visualize import colorize, confidence_to_mono8, mask_to_mono8, overlay

_SKIP_WITHOUT_CUDA = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (pinned copies, fp16 + channels_last, CUDA graphs); the same "
           "pipeline is checked on the CPU by the other tests here and in test_cuda_path.py")


def NEEDS_CUDA(test: Any) -> Any:
    """Mark ``test`` as a CUDA test (``pytest -m cuda``, ``make gpu-check``), skipped
    without CUDA."""
    return pytest.mark.cuda(_SKIP_WITHOUT_CUDA(test))


@pytest.fixture(scope="module")
def seg(ssnet_checkpoint_varied: Path) -> Segmenter:
    torch.set_num_threads(1)
    return Segmenter(ssnet_checkpoint_varied, device="cpu", input_size=(48, 64))


def scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    out = [127 + 120 * np.sin(xx / (7 + 3 * c) + yy / (11 + 2 * c) + phase[c]) for c in range(3)]
    return np.stack(out, axis=-1).astype(np.uint8)


def reference(seg: Segmenter, image: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """The outputs as the node drew them before render_batch: Segmenter + visualize."""
    r = seg(image)
    color = colorize(r.labels, seg.palette)
    return {"labels": r.labels, "drivable_mask": mask_to_mono8(r.drivable),
            "confidence": confidence_to_mono8(r.confidence), "color": color,
            "overlay": overlay(image, color, alpha)}


def test_render_batch_equals_segmenter_plus_numpy_drawing(seg: Segmenter) -> None:
    images = [scene(60, 80, 1), scene(37, 53, 2), scene(60, 80, 3)]
    out = seg.render_batch(images, OUTPUT_KEYS, overlay_alpha=0.3)
    assert len(out) == 3
    for image, got in zip(images, out):
        want = reference(seg, image, 0.3)
        assert set(got) == set(OUTPUT_KEYS)
        for key in OUTPUT_KEYS:
            assert got[key].dtype == np.uint8 and got[key].shape == want[key].shape, key
        # a batch of two and a single image may round a handful of near-tied pixels apart
        assert np.mean(got["labels"] == want["labels"]) > 0.999
        labels = got["labels"]
        np.testing.assert_array_equal(got["color"], colorize(labels, seg.palette))
        np.testing.assert_array_equal(got["overlay"], overlay(image, got["color"], 0.3))
        np.testing.assert_array_equal(got["drivable_mask"],
                                      np.where(np.isin(labels, seg.drivable_ids), 255, 0))
    assert len(np.unique(out[0]["labels"])) > 1


def test_large_cpu_batches_run_as_smaller_forward_passes(
        seg: Segmenter, monkeypatch: pytest.MonkeyPatch) -> None:
    import ssnet_ros.core.segmenter as segmenter_mod

    images = [scene(60, 80, i) for i in range(3)]
    monkeypatch.setattr(segmenter_mod, "CPU_BATCH_PIXELS", 1)  # one frame per forward pass
    calls = []
    network = seg.logits  # every forward pass goes through it
    monkeypatch.setattr(seg, "logits", lambda batch, **kw: calls.append(len(batch))
                        or network(batch, **kw))
    out = seg.render_batch(images, ["labels"])
    assert calls == [1, 1, 1]
    for image, got in zip(images, out):
        np.testing.assert_array_equal(got["labels"], seg(image).labels)
    calls.clear()
    monkeypatch.setattr(segmenter_mod, "CPU_BATCH_PIXELS", 2 * 48 * 64)  # two per pass
    seg.render_batch(images, ["labels"])
    assert calls == [2, 1]


def test_only_requested_outputs_and_clear_errors(seg: Segmenter) -> None:
    out = seg.render_batch([scene(24, 32, 0)], ["overlay", "labels"])
    assert set(out[0]) == {"labels", "overlay"}
    assert seg.render_batch([scene(24, 32, 0)], []) == [{}]
    with pytest.raises(SSNetError, match="unknown outputs"):
        seg.render_batch([scene(24, 32, 0)], ["labels", "depth"])
    with pytest.raises(SSNetError, match="outside 0..1"):
        seg.render_batch([scene(24, 32, 0)], ["overlay"], overlay_alpha=1.5)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        seg.render_batch([np.zeros((8, 8), np.uint8)], ["labels"])


@pytest.fixture(scope="module")
def native(ssnet_checkpoint_varied: Path) -> Segmenter:
    return Segmenter(ssnet_checkpoint_varied, device="cpu", input_size="native")


def test_device_and_host_resizing_agree() -> None:
    """The CPU resizes uint8 frames with OpenCV before normalising (area when shrinking);
    the device pipeline does the same area averaging in torch (resize_frames): the frames
    the network sees differ by a rounding at most, and so do the labels."""
    seg = Segmenter(None, device="cpu", input_size=(96, 128))
    images = [scene(180, 280, 5), scene(180, 280, 6)]
    tables = DeviceTables(seg.card.mean, seg.card.std, seg._palette, seg.drivable_ids,
                          seg.device)
    with torch.inference_mode():
        packed = render_packed(seg.model, torch.from_numpy(np.stack(images)), ("labels",),
                               tables, dtype=seg.dtype, channels_last=False,
                               input_size=seg.input_size)
    got = unpack(packed.numpy(), 180, 280, ("labels",))
    labels, _, _ = seg.predict(torch.from_numpy(np.stack(images)))
    for g, want in zip(got, labels):
        assert (g["labels"] == want).mean() > 0.995, (g["labels"] == want).mean()


@pytest.mark.parametrize("alpha", [0.0, 0.37, 1.0])
def test_device_pipeline_on_the_cpu_equals_the_numpy_path(native: Segmenter,
                                                          alpha: float) -> None:
    """render_packed (what CUDA runs and graphs capture) vs numpy, bit for bit (at the
    network's own size; resizing differs by design, see above)."""
    seg = native
    images = [scene(48, 64, 5), scene(48, 64, 6)]
    tables = DeviceTables(seg.card.mean, seg.card.std, seg._palette, seg.drivable_ids,
                          seg.device)
    tables.alpha.fill_(round(alpha * 256))
    with torch.inference_mode():
        packed = render_packed(seg.model, torch.from_numpy(np.stack(images)), OUTPUT_KEYS,
                               tables, dtype=seg.dtype, channels_last=False,
                               input_size=seg.input_size)
    got = unpack(packed.numpy(), 48, 64, OUTPUT_KEYS)
    labels, drivable, conf = seg.predict(torch.from_numpy(np.stack(images)))
    want = render_numpy(images, labels, drivable, conf, OUTPUT_KEYS, seg._palette, alpha)
    for g, w in zip(got, want):
        for key in OUTPUT_KEYS:
            np.testing.assert_array_equal(g[key], w[key], err_msg=key)


def test_cuda_graphs_need_cuda(ssnet_checkpoint: Path) -> None:
    with pytest.raises(SSNetError, match="cuda_graphs needs a CUDA device"):
        Segmenter(ssnet_checkpoint, device="cpu", cuda_graphs=True)
    assert not Segmenter(ssnet_checkpoint, device="cpu").cuda_graphs


# ---- CUDA -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scaled_checkpoint(tmp_path_factory: pytest.TempPathFactory,
                      ssnet_checkpoint_varied: Path) -> Path:
    """A random SSNet whose activations keep their scale (He-initialised convolutions): the
    default initialisation shrinks them to ~1e-7, below fp16's normal range."""
    from torch import nn

    from ssnet_ros.core.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(ssnet_checkpoint_varied)
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "scaled.pt", model, card)


@pytest.fixture(scope="module")
def cuda_seg(scaled_checkpoint: Path) -> Segmenter:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return Segmenter(scaled_checkpoint, device="cuda")


@NEEDS_CUDA
def test_cuda_defaults_are_fp16_channels_last_with_graphs(cuda_seg: Segmenter) -> None:
    assert cuda_seg.dtype == torch.float16 and cuda_seg.cuda_graphs
    weight = cuda_seg.model.encoder[0][0][0].weight
    assert weight.dtype == torch.float16
    assert weight.is_contiguous(memory_format=torch.channels_last)


@NEEDS_CUDA
def test_cuda_outputs_are_consistent_and_agree_with_the_cpu(
        cuda_seg: Segmenter, scaled_checkpoint: Path) -> None:
    cpu = Segmenter(scaled_checkpoint, device="cpu")
    images = [scene(120, 160, i) for i in range(3)]
    out = cuda_seg.render_batch(images, OUTPUT_KEYS, overlay_alpha=0.4)
    for image, got in zip(images, out):
        labels = got["labels"]
        assert labels.shape == (120, 160)
        np.testing.assert_array_equal(got["color"], colorize(labels, cuda_seg.palette))
        np.testing.assert_array_equal(got["overlay"], overlay(image, got["color"], 0.4))
        np.testing.assert_array_equal(got["drivable_mask"],
                                      np.where(np.isin(labels, cuda_seg.drivable_ids), 255, 0))
        ref = cpu(image)
        # fp16 vs fp32 on a random-weight model (many near ties; 90% in a CPU emulation)
        assert np.mean(labels == ref.labels) > 0.8
        conf = confidence_to_mono8(ref.confidence).astype(int)
        assert np.mean(np.abs(got["confidence"].astype(int) - conf) <= 2) > 0.8


@NEEDS_CUDA
def test_graphs_are_captured_once_per_shape_and_match_eager(cuda_seg: Segmenter) -> None:
    before = cuda_seg.graphs_captured
    one, four = [scene(96, 128, 0)], [scene(96, 128, i) for i in range(4)]
    keys = ("labels", "drivable_mask")
    first = cuda_seg.render_batch(one, keys)
    again = cuda_seg.render_batch(one, keys)
    cuda_seg.render_batch(four, keys)
    cuda_seg.render_batch(four, keys)
    assert cuda_seg.graphs_captured == before + 2, cuda_seg.graph_error
    np.testing.assert_array_equal(first[0]["labels"], again[0]["labels"])
    with torch.inference_mode():
        x = torch.from_numpy(np.stack(one)).cuda()
        eager = cuda_seg._render_packed(x, keys).cpu().numpy()
    np.testing.assert_array_equal(eager[0, :96 * 128].reshape(96, 128), first[0]["labels"])


@NEEDS_CUDA
def test_overlay_alpha_changes_without_a_new_capture(cuda_seg: Segmenter) -> None:
    image = scene(64, 96, 9)
    cuda_seg.render_batch([image], ["overlay", "color"], overlay_alpha=0.2)
    captured = cuda_seg.graphs_captured
    for alpha in (0.0, 0.8, 1.0):
        out = cuda_seg.render_batch([image], ["overlay", "color"], overlay_alpha=alpha)[0]
        np.testing.assert_array_equal(out["overlay"], overlay(image, out["color"], alpha))
    assert cuda_seg.graphs_captured == captured


@NEEDS_CUDA
def test_one_copy_to_the_gpu_and_one_back_per_batch(cuda_seg: Segmenter) -> None:
    from torch.profiler import ProfilerActivity, profile

    images = [scene(64, 96, i) for i in range(2)]
    cuda_seg.render_batch(images, OUTPUT_KEYS)  # captured before profiling
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        cuda_seg.render_batch(images, OUTPUT_KEYS)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    assert sum("Memcpy HtoD" in n for n in names) == 1, names
    assert sum("Memcpy DtoH" in n for n in names) == 1, names
    assert any("Pinned" in n for n in names if "Memcpy" in n), names


@NEEDS_CUDA
def test_cuda_bf16_and_eager_mode(scaled_checkpoint: Path) -> None:
    seg = Segmenter(scaled_checkpoint, device="cuda", precision="bf16", cuda_graphs=False,
                    input_size=(64, 96))
    out = seg.render_batch([scene(120, 200, 1)], ["labels", "confidence"])[0]
    assert out["labels"].shape == (120, 200) and seg.graphs_captured == 0
    assert out["confidence"].min() >= 255 // len(seg.class_names)
