"""ONNX export: the index-free SSNet is exact, onnxruntime (CPU) matches PyTorch.

Labels are compared on real CamVid images with trained weights (random weights have
near-tied logits, so their labels are no parity test); random models check the logits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NO_SHARED_DATA

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ssnet_ros.core.checkpoint import load_checkpoint  # noqa: E402
from ssnet_ros.errors import SSNetError  # noqa: E402
from ssnet_ros.tools.export import PortableSSNet, export_onnx, label_parity, main, \
    onnx_session, read_images, read_onnx_card  # noqa: E402
from ssnet_ros.models import build_model  # noqa: E402
from ssnet_ros.core.preprocessing import normalize  # noqa: E402
from ssnet_ros.core.segmenter import default_weights  # noqa: E402

CAMVID_VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "val"
PARITY_IMAGES = 3
WEIGHTS_ENV = "SSNET_TEST_WEIGHTS"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> None:
    torch.set_num_threads(1)


def test_index_free_ssnet_equals_ssnet_bit_for_bit(ssnet_checkpoint_varied: Path) -> None:
    model, _ = load_checkpoint(ssnet_checkpoint_varied)
    portable = PortableSSNet(model)
    with torch.no_grad():
        for shape in [(2, 3, 37, 53), (1, 3, 64, 96)]:
            x = torch.randn(*shape) * 50
            assert torch.equal(portable(x), model(x))
        zeros = torch.zeros(1, 3, 32, 48)  # every pooling window tied: the first one wins
        assert torch.equal(portable(zeros), model(zeros))


def close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    assert scale > 0
    assert float(np.abs(got - ref).max()) <= 1e-4 * scale


@pytest.mark.parametrize("name, unpool, dynamic_size", [("ssnet", "portable", False),
                                                         ("ssnet", "native", False),
                                                         ("fcn8s", "portable", True)])
def test_onnxruntime_logits_match_pytorch(tmp_path: Path, ssnet_checkpoint_varied: Path,
                                          name: str, unpool: str, dynamic_size: bool) -> None:
    _, card = load_checkpoint(ssnet_checkpoint_varied)
    torch.manual_seed(0)
    model = build_model(name, num_classes=card.num_classes).eval()
    if dynamic_size:  # sizes vary as multiples of the size divisor (32 for FCN-8s)
        path = export_onnx(model, card, tmp_path / "m.onnx", height=64, width=96,
                           dynamic_batch=True, dynamic_size=True, unpool=unpool)
        shapes = [(1, 3, 64, 96), (2, 3, 32, 160)]
    else:  # a fixed odd size (padding and cropping are in the graph), any batch size
        path = export_onnx(model, card, tmp_path / "m.onnx", height=45, width=70,
                           dynamic_batch=True, unpool=unpool)
        shapes = [(1, 3, 45, 70), (3, 3, 45, 70)]
    session = onnx_session(path, threads=1)
    for shape in shapes:
        x = torch.randn(*shape) * 30
        with torch.no_grad():
            ref = model(x).numpy()
        close(session.run(None, {"image": x.numpy()})[0], ref)


def test_end_to_end_export_gives_the_segmenter_labels(tmp_path: Path,
                                                      ssnet_checkpoint_varied: Path) -> None:
    model, card = load_checkpoint(ssnet_checkpoint_varied)
    path = export_onnx(model, card, tmp_path / "e2e.onnx", height=40, width=56,
                       end_to_end=True)
    image = np.random.default_rng(0).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    got = onnx_session(path, threads=1).run(None, {"image": image})[0]
    with torch.no_grad():
        ref = model(normalize(torch.from_numpy(image), card.mean, card.std)).argmax(1)
    assert got.dtype == np.uint8 and got.shape == (1, 40, 56)
    assert np.mean(got == ref.numpy()) > 0.999


def test_export_errors_are_one_sentence(tmp_path: Path, ssnet_checkpoint: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--weights", str(ssnet_checkpoint), "--out", str(tmp_path / "x.onnx"),
                 "--input-height", "45", "--input-width", "70", "--dynamic-size"])
    assert code == 2
    assert "multiples of 16" in capsys.readouterr().err
    code = main(["--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx"),
                 "--input-height", "45", "--input-width", "70"])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["--weights", str(ssnet_checkpoint), "--out", str(tmp_path / "x.onnx"),
                 "--input-height", "0", "--input-width", "70"])
    err = capsys.readouterr().err
    assert code == 2 and "must be positive" in err and "\x1b" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_file_carries_the_model_card(tmp_path: Path, ssnet_checkpoint: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    args = ["--weights", str(ssnet_checkpoint), "--out", str(out), "--input-height", "32",
            "--input-width", "48", "--no-progress"]
    assert main(args) == 0
    _, card = load_checkpoint(ssnet_checkpoint)
    assert read_onnx_card(out) == card
    meta = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(card.class_names)
    assert json.loads(meta["palette"]) == [list(c) for c in card.palette]
    assert json.loads(meta["drivable_classes"]) == list(card.drivable_classes)
    assert json.loads(meta["mean"]) == list(card.mean)
    assert meta["input_size"] == "32x48" and meta["exported_by"].startswith("ssnet_ros ")
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err  # never replaced
    assert main(args + ["--overwrite"]) == 0


def test_onnx_without_a_card_is_named(tmp_path: Path) -> None:
    import onnx

    bare = tmp_path / "bare.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(bare))
    with pytest.raises(SSNetError, match="bare.onnx carries no ssnet_ros model card"):
        read_onnx_card(bare)


def trained_weights() -> Path | None:
    """$SSNET_TEST_WEIGHTS, else the weights shipped with the package."""
    return Path(os.environ[WEIGHTS_ENV]) if os.environ.get(WEIGHTS_ENV) else default_weights()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_onnx_labels_match_pytorch_on_camvid_val(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    weights = trained_weights()
    if weights is None:
        pytest.skip(f"no trained weights: the package ships none (ssnet_ros/weights/"
                    f"ssnet_camvid.pt) and ${WEIGHTS_ENV} is not set; random weights have "
                    f"near-tied logits, so their labels are no parity test")
    if not CAMVID_VAL.is_dir():
        pytest.skip(f"needs ../shared/data/camvid/val: {NO_SHARED_DATA}")
    model, card = load_checkpoint(weights)
    images = read_images(CAMVID_VAL, PARITY_IMAGES)
    h, w = images[0].shape[:2]
    path = export_onnx(model, card, tmp_path / "ssnet.onnx", height=h, width=w)
    result = label_parity(model, card, onnx_session(path, threads=1), images)
    with capsys.disabled():
        print(f"\nONNX parity ({weights}, {len(images)} CamVid val images {w}x{h}): "
              f"{100 * result['identical']:.4f}% identical labels, max logit difference "
              f"{result['max_logit_diff']:.2e}")
    assert result["identical"] >= 0.999
