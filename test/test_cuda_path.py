"""The CUDA path's own code, run on the CPU: graph-cache keys, eviction, warm-up, capture
errors, reused host buffers and the device resize. The GPU runs the same functions (with
CUDA graphs where the CPU replays eagerly); what only a GPU shows is in test_fastpath.py's
CUDA tests (``make gpu-check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ssnet_ros import Segmenter
from ssnet_ros.core.checkpoint import load_checkpoint
from ssnet_ros.core.preprocessing import resize_frames, resize_matrix, resize_uint8
from ssnet_ros.core.render import GraphCache, HostBuffers, capture_eager, root_cause

KEYS = ("labels", "drivable_mask")


def scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    out = [127 + 120 * np.sin(xx / (3 + c) + yy / (5 + 2 * c) + phase[c]) for c in range(3)]
    noise = rng.integers(-20, 21, (h, w, 3))
    return np.clip(np.stack(out, axis=-1) + noise, 0, 255).astype(np.uint8)


def device_path(seg: Segmenter, graphs: bool = True) -> Segmenter:
    """``seg`` (CPU) running render_batch through the GPU's code: render_packed, staged host
    buffers and a GraphCache (replayed eagerly)."""
    seg._use_device_path(graphs)
    return seg


@pytest.fixture()
def seg(ssnet_checkpoint_varied: Path) -> Segmenter:
    torch.set_num_threads(1)
    return device_path(Segmenter(ssnet_checkpoint_varied, device="cpu", input_size=(24, 32)))


def test_one_capture_per_key_and_replays_equal_eager(seg: Segmenter) -> None:
    one, two = [scene(40, 56, 0)], [scene(40, 56, 1), scene(40, 56, 2)]
    first = seg.render_batch(one, KEYS)
    again = seg.render_batch(one, KEYS)
    assert seg.graphs_captured == 1 and seg.has_graph(1, 40, 56, KEYS)
    seg.render_batch(two, KEYS)
    seg.render_batch(two, KEYS)
    seg.render_batch(one, ["labels"])
    assert seg.graphs_captured == 3, seg.graph_error
    np.testing.assert_array_equal(first[0]["labels"], again[0]["labels"])
    with torch.inference_mode():
        eager = seg._render_packed(torch.from_numpy(np.stack(two)), KEYS, (24, 32)).numpy()
    replayed = seg.render_batch(two, KEYS)
    np.testing.assert_array_equal(eager[1, :40 * 56].reshape(40, 56), replayed[1]["labels"])
    # what the host path (OpenCV resize, numpy drawing) gives for the same frames
    host = Segmenter(seg.weights, device="cpu", input_size=(24, 32)).render_batch(two, KEYS)
    assert np.mean(host[0]["labels"] == replayed[0]["labels"]) > 0.99


def test_least_recently_used_graph_is_evicted_only_after_a_capture(seg: Segmenter) -> None:
    cache = GraphCache(seg._render_packed, seg.device, size=2)
    frames = {n: torch.from_numpy(np.stack([scene(16, 24, i) for i in range(n)]))
              for n in (1, 2, 3)}
    with torch.inference_mode():
        cache.run(frames[1], KEYS, None)
        cache.run(frames[2], KEYS, None)
        cache.run(frames[1], KEYS, None)  # 1 is now the most recent
        cache.run(frames[3], KEYS, None)
        assert len(cache) == 2 and cache.captures == 3
        assert GraphCache.key(frames[1], KEYS, None) in cache
        assert GraphCache.key(frames[2], KEYS, None) not in cache
        cache.run(frames[2], KEYS, None)
    assert cache.captures == 4


def focal_rule_segmenter(checkpoint: Path) -> Segmenter:
    """The device path on the CPU with an input rule whose network size follows the focal
    length (48x64 for 96x128 frames at 100 px)."""
    model, card = load_checkpoint(checkpoint)
    rule = {"reference_pixels": 48.0 * 64.0, "reference_focal_px": 50.0, "min_scale": 0.1,
            "max_scale": 1.0, "multiple": 8.0}
    return device_path(Segmenter.from_model(model, card.replace(input_rule=rule),
                                            device="cpu"))


def test_focal_length_changes_keep_graphs_whose_network_size_stays(
        ssnet_checkpoint_varied: Path) -> None:
    seg = focal_rule_segmenter(ssnet_checkpoint_varied)
    image = [scene(96, 128, 3)]
    seg.set_focal_length(100.0)
    assert seg.network_size(96, 128) == (48, 64)
    seg.render_batch(image, KEYS)
    seg.set_focal_length(101.0)  # the same network size: the same graph
    assert seg.network_size(96, 128) == (48, 64) and seg.has_graph(1, 96, 128, KEYS)
    seg.render_batch(image, KEYS)
    assert seg.graphs_captured == 1
    seg.set_focal_length(200.0)  # another network size: another graph, the first one kept
    seg.render_batch(image, KEYS)
    seg.set_focal_length(100.0)
    seg.render_batch(image, KEYS)
    assert seg.graphs_captured == 2


def test_warm_up_captures_the_key_the_frames_use(seg: Segmenter) -> None:
    seg.warm_up(40, 56, batch=2, outputs=["drivable_mask", "labels"])
    assert seg.graphs_captured == 1 and seg.has_graph(2, 40, 56, KEYS)
    seg.render_batch([scene(40, 56, 1), scene(40, 56, 2)], KEYS)
    assert seg.graphs_captured == 1


class _FailingCapture:
    """A capture whose graph context fails again on exit, as torch.cuda.graph's capture_end
    does after an error inside the capture: the first error must still be the one named."""

    def __init__(self, first: RuntimeError) -> None:
        self.first = first

    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: Any) -> None:
        raise RuntimeError("CUDA error: operation failed due to a previous error during "
                           "capture")

    def __call__(self, *args: Any) -> Any:
        with self:
            raise self.first


def test_out_of_memory_in_a_capture_runs_that_key_eager_and_keeps_the_others(
        seg: Segmenter) -> None:
    assert seg._graphs is not None
    image = [scene(40, 56, 4)]
    seg.render_batch(image, KEYS)
    want = seg.render_batch([scene(40, 48, 5)], KEYS)[0]
    seg._graphs._capture_fn = _FailingCapture(torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB"))
    got = seg.render_batch([scene(40, 40, 5)], KEYS)[0]  # falls back to eager
    assert got["labels"].shape == (40, 40)
    assert seg.cuda_graphs and seg.graph_error is not None
    assert seg.graph_error.startswith("OutOfMemoryError: CUDA out of memory"), seg.graph_error
    assert seg.has_graph(1, 40, 56, KEYS) and seg.has_graph(1, 40, 48, KEYS)
    seg.render_batch([scene(40, 40, 5)], KEYS)  # no second try for that key
    assert seg.graphs_captured == 2
    again = seg.render_batch([scene(40, 48, 5)], KEYS)[0]
    np.testing.assert_array_equal(want["labels"], again["labels"])


def test_an_op_that_cannot_be_captured_turns_graphs_off_naming_the_first_error(
        seg: Segmenter) -> None:
    assert seg._graphs is not None
    seg._graphs._capture_fn = _FailingCapture(RuntimeError("operation not permitted when "
                                                           "stream is capturing"))
    out = seg.render_batch([scene(40, 56, 6)], KEYS)[0]
    assert out["labels"].shape == (40, 56)
    assert not seg.cuda_graphs
    assert seg.graph_error == ("RuntimeError: operation not permitted when stream is "
                               "capturing")


def test_root_cause_follows_the_context_chain() -> None:
    try:
        with _FailingCapture(RuntimeError("first")):
            raise RuntimeError("first")
    except RuntimeError as exc:
        assert str(exc).startswith("CUDA error") and str(root_cause(exc)) == "first"


def test_host_buffers_are_reused_per_shape_and_bounded(seg: Segmenter) -> None:
    buffers = HostBuffers(pin=False, size=2)
    a = buffers.get((1, 4, 4, 3))
    assert buffers.get((1, 4, 4, 3)) is a
    buffers.get((2, 4, 4, 3))
    buffers.get((3, 4, 4, 3))
    assert len(buffers) == 2 and buffers.get((1, 4, 4, 3)) is not a
    seg.render_batch([scene(40, 56, 7)], KEYS)
    staged = seg._host.get((1, 40, 56, 3)).data_ptr()
    seg.render_batch([scene(40, 56, 8)], KEYS)
    assert seg._host.get((1, 40, 56, 3)).data_ptr() == staged and len(seg._host) == 1


def test_eager_capture_contract() -> None:
    static_in = torch.zeros((1, 2, 2, 3), dtype=torch.uint8)

    def render(x: torch.Tensor, outputs: tuple[str, ...], net: Any) -> torch.Tensor:
        return x.reshape(1, -1) + 1

    replay, static_out = capture_eager(render, static_in, ("labels",), None)
    static_in.fill_(7)
    replay()
    assert static_out.unique().tolist() == [8]


@pytest.mark.parametrize(("src", "dst"), [((375, 1242), (232, 760)), ((180, 280), (96, 128)),
                                          ((100, 100), (50, 50)), ((48, 64), (96, 128))])
def test_device_resize_matches_the_host_resize(src: tuple[int, int],
                                               dst: tuple[int, int]) -> None:
    """resize_frames (the GPU's resize) vs OpenCV (the CPU's): area when shrinking, so
    the labels a GPU computes are those the CPU tests validate."""
    batch = torch.from_numpy(np.stack([scene(*src, 9)]))
    device = resize_frames(batch, dst)
    host = resize_uint8(batch, dst).float()
    diff = (device - host).abs()
    assert diff.max() <= 1  # OpenCV's fixed-point bilinear differs by one level at most
    if dst[0] <= src[0]:  # shrinking: area averaging, as OpenCV
        assert (diff == 0).float().mean() > 0.9999
    rows = resize_matrix(src[0], dst[0])
    assert torch.allclose(rows.sum(dim=1), torch.ones(dst[0]))


def test_warm_up_for_another_focal_length_leaves_the_current_one(
        ssnet_checkpoint_varied: Path) -> None:
    seg = focal_rule_segmenter(ssnet_checkpoint_varied)
    seg.set_focal_length(100.0)
    seg.warm_up(96, 128, outputs=KEYS, focal_px=200.0)
    assert seg.focal_px == 100.0 and not seg.has_graph(1, 96, 128, KEYS)
    seg.set_focal_length(200.0)
    assert seg.has_graph(1, 96, 128, KEYS)


# ---- the same on CUDA (make gpu-check) -------------------------------------------------------

def _cuda_seg(checkpoint: Path) -> Segmenter:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; the CPU tests above run the same code")
    # the last GPU: with several, cuda:N != the current device cuda:0 (item 1 of issue 21)
    return Segmenter(checkpoint, device=f"cuda:{torch.cuda.device_count() - 1}",
                     input_size=(24, 32))


@pytest.mark.cuda
def test_cuda_graphs_warm_up_evict_and_keep_on_the_segmenters_gpu(
        ssnet_checkpoint_varied: Path) -> None:
    seg = _cuda_seg(ssnet_checkpoint_varied)
    assert seg.cuda_graphs and seg._graphs is not None
    seg.warm_up(40, 56, batch=2, outputs=KEYS)
    assert seg.has_graph(2, 40, 56, KEYS) and seg.graph_error is None
    frames = [scene(40, 56, 1), scene(40, 56, 2)]
    replayed = seg.render_batch(frames, KEYS)
    assert seg.graphs_captured == 1
    with torch.inference_mode():
        eager = seg._render_packed(torch.from_numpy(np.stack(frames)).to(seg.device), KEYS,
                                   (24, 32)).cpu().numpy()
    np.testing.assert_array_equal(eager[1, :40 * 56].reshape(40, 56), replayed[1]["labels"])
    seg._graphs.size = 2
    for w in (48, 64, 72):
        seg.render_batch([scene(40, w, 3)], KEYS)
    assert len(seg._graphs) == 2 and seg.graphs_captured == 4 and seg.cuda_graphs
    again = seg.render_batch(frames, KEYS)  # evicted, captured again in the shared pool
    np.testing.assert_array_equal(again[1]["labels"], replayed[1]["labels"])
