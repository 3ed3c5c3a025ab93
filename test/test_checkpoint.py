"""Checkpoint format: metadata round trip, compact storage, one clear error per bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssnet_ros import ModelCard, SSNetError, build_model, load_checkpoint, read_card
from ssnet_ros.core.checkpoint import FORMAT, save_checkpoint
from ssnet_ros.datasets.classes import CAMVID_CLASSES, CAMVID_DRIVABLE, CAMVID_PALETTE


def card(**changes: object) -> ModelCard:
    base = ModelCard(model="ssnet", class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE,
                     drivable_classes=CAMVID_DRIVABLE, mean=(1.0, 2.0, 3.0),
                     std=(4.0, 5.0, 6.0), train_size=(360, 480),
                     metrics={"miou": 0.5}, dataset="camvid")
    return base.replace(**changes) if changes else base


def test_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("ssnet", num_classes=11).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, card())
    loaded, c = load_checkpoint(path)
    assert c == card()
    assert c.drivable_ids == (3,)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        # weights are stored in fp16: outputs agree to fp16 precision
        assert torch.allclose(loaded(x), model(x), atol=5e-2, rtol=1e-2)
    assert not loaded.training
    # fp16 storage: about 2 bytes per parameter
    params = sum(p.numel() for p in model.parameters())
    assert path.stat().st_size < 2.2 * params + 200_000
    assert read_card(path) == card()


def test_save_is_atomic_and_refuses_contradictions(tmp_path: Path) -> None:
    model = build_model("ssnet", num_classes=11)
    with pytest.raises(SSNetError, match="palette has 2 colours for 11 classes"):
        save_checkpoint(tmp_path / "bad.pt", model, card(palette=[[0, 0, 0], [1, 1, 1]]))
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SSNetError, match=r"weights file .*nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SSNetError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(SSNetError, match=r"corrupt\.pt is corrupt or not a PyTorch file"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", build_model("ssnet", num_classes=11), card())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SSNetError, match="m.pt is corrupt"):
        load_checkpoint(path)


def test_foreign_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save(build_model("ssnet", num_classes=11).state_dict(), path)
    with pytest.raises(SSNetError, match="plain.pt is not an ssnet_ros checkpoint"):
        load_checkpoint(path)


def test_wrong_version(tmp_path: Path) -> None:
    path = tmp_path / "v9.pt"
    torch.save({"format": FORMAT, "format_version": 9, "card": card().to_dict(),
                "state_dict": {}}, path)
    with pytest.raises(SSNetError, match="format version 9"):
        load_checkpoint(path)


@pytest.mark.parametrize("changes, message", [
    ({"drivable_classes": ["Runway"]}, r"drivable classes \['Runway'\] are not class names"),
    ({"model": "segnet"}, "unknown model 'segnet'"),
    ({"std": [1.0, 0.0, 1.0]}, "positive stds"),
])
def test_contradicting_card(tmp_path: Path, changes: dict, message: str) -> None:
    path = tmp_path / "c.pt"
    torch.save({"format": FORMAT, "format_version": 1, "card": {**card().to_dict(), **changes},
                "state_dict": {}}, path)
    with pytest.raises(SSNetError, match="c.pt contradicts itself: .*" + message):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_card(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "five.pt", build_model("ssnet", num_classes=5),
                           card(class_names=list("abcde"), palette=[[0, 0, 0]] * 5,
                                drivable_classes=["a"]))
    payload = torch.load(path, weights_only=True)
    payload["card"] = card().to_dict()  # claims 11 classes, holds a 5-class classifier
    torch.save(payload, path)
    with pytest.raises(SSNetError, match="five.pt does not fit model 'ssnet' with 11 classes"):
        load_checkpoint(path)


def test_non_finite_weights_are_refused_in_one_sentence(tmp_path: Path) -> None:
    model = build_model("ssnet", num_classes=11)
    with torch.no_grad():
        model.classifier.weight[0, 0, 0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", model, card())
    with pytest.raises(SSNetError, match=r"nan.pt holds non-finite values \(NaN or inf\) in 1 "
                                         r"tensors, e.g. 'classifier.weight'"):
        load_checkpoint(path)


def test_non_finite_normalisation_is_a_contradiction(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"format": FORMAT, "format_version": 1,
                "card": {**card().to_dict(), "mean": [float("nan"), 1.0, 1.0]},
                "state_dict": {}}, path)
    with pytest.raises(SSNetError, match="normalization values must be finite"):
        load_checkpoint(path)


def test_non_tensor_state_entry_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"format": FORMAT, "format_version": 1, "card": card().to_dict(),
                "state_dict": {"encoder.0.weight": "text"}}, path)
    with pytest.raises(SSNetError, match="entry 'encoder.0.weight' that is not a tensor"):
        load_checkpoint(path)


def test_pickled_objects_are_refused_without_torch_advice(tmp_path: Path) -> None:
    import argparse

    path = tmp_path / "pickle.pt"
    torch.save({"format": FORMAT, "format_version": 1, "card": card().to_dict(),
                "state_dict": argparse.Namespace(a=1)}, path)
    with pytest.raises(SSNetError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "pickle.pt holds Python objects" in text and "weights_only" not in text
    assert len(text.splitlines()) == 1


def test_unknown_model_kwargs_are_one_sentence(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "kw.pt", build_model("ssnet", num_classes=11), card())
    payload = torch.load(path, weights_only=True)
    payload["card"]["model_kwargs"] = {"depth": 99}
    torch.save(payload, path)
    with pytest.raises(SSNetError, match="kw.pt: model 'ssnet' cannot be built with the "
                                         "card's model_kwargs"):
        load_checkpoint(path)


def test_absurd_sizes_are_refused(tmp_path: Path) -> None:
    from ssnet_ros import Segmenter

    assert card(train_size=[10**6, 10]).problems()
    with pytest.raises(SSNetError, match="within 1..16384"):
        Segmenter(None, device="cpu", input_size=(100000, 100000))


def test_the_card_knows_which_splits_it_trained_on() -> None:
    mixed = card(training={"datasets": [{"name": "camvid", "split": "train+val"},
                                        {"name": "idd_lite", "split": "train"}]})
    assert mixed.training_splits() == {"camvid": {"train", "val"}, "idd_lite": {"train"}}
    assert mixed.trained_split_names("camvid") == {"train+val"}  # what a samples log numbers
    assert mixed.trained_split_names("idd_lite_loose") == {"train"}  # the same frames
    assert mixed.trained_split_names("cityscapes_p2p") == set()
    assert "camvid/val was part of this model's training data" in mixed.trained_on("camvid",
                                                                                   "val")
    assert mixed.trained_on("idd_lite", "holdout") is None
    assert "idd_lite/train" in mixed.trained_on("idd_lite", "train+holdout")
    assert mixed.trained_on("kitti_road", "all") is None
    old = card()  # no training section: the train split of its dataset
    assert old.trained_on("camvid", "train") and old.trained_on("camvid", "val") is None


def test_data_licence_is_derived_or_recorded_and_survives_a_card_update(tmp_path: Path
                                                                        ) -> None:
    from ssnet_ros.core.checkpoint import update_card

    derived = card(training={"datasets": [{"name": "idd_lite"}], "recipe": {
        "vgg_weights": "auto"}}).licence()
    assert "non-commercial" in derived and "ImageNet" in derived
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", build_model("ssnet", num_classes=11), card())
    before = torch.load(path, weights_only=True)
    assert update_card(path, data_licence="research only").licence() == "research only"
    after = torch.load(path, weights_only=True)
    assert read_card(path) == card(data_licence="research only")
    assert all(torch.equal(v, after["state_dict"][k]) and v.dtype == after["state_dict"][k].dtype
               for k, v in before["state_dict"].items())
    with pytest.raises(SSNetError, match="refusing to update"):
        update_card(path, palette=((0, 0, 0),))


def test_the_shipped_weights_state_their_data_licence() -> None:
    from ssnet_ros.core.segmenter import shipped_weights

    for name, path in shipped_weights().items():
        text = read_card(path).data_licence
        assert "non-commercial" in text and "CamVid" in text, name


def _zip_member_bomb(path: Path, member: str, declared: int) -> Path:
    """A checkpoint-like zip whose ``member`` declares ``declared`` bytes (small on disk: the
    sizes in its local and central headers are patched, as a crafted file would have them)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", b"\x80\x02}q\x00.")
        if member != "data.pkl":
            archive.writestr(f"bomb/{member}", bytes(1024))
    data = bytearray(path.read_bytes())
    name = f"bomb/{member}".encode()
    for sig, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = 0
        while (at := data.find(sig, at)) >= 0:
            if data[at + name_at:at + name_at + len(name)] == name:
                data[at + size_at:at + size_at + 4] = struct.pack("<I", declared)
            at += 4
    path.write_bytes(bytes(data))
    return path


def test_a_deflated_pickle_bomb_is_refused_unread(tmp_path: Path) -> None:
    """A real bomb: data.pkl deflated from 64 MB of zeros (64 KB on disk)."""
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", bytes(64 * 1024 * 1024))
    assert path.stat().st_size < 200_000
    with pytest.raises(SSNetError, match=r"bomb.pt: its bomb/data.pkl would inflate to 67 MB"):
        load_checkpoint(path)


def test_weights_declaring_gigabytes_are_refused_in_seconds_with_little_memory(
        tmp_path: Path) -> None:
    """The probe: a few-KB .pt whose members declare 4 GB, opened by the Python API in a
    process of its own (peak memory and time measured there), and by read_card."""
    import subprocess
    import sys
    import time

    from ssnet_ros.core.checkpoint import max_tensor_bytes, read_card

    for member in ("data.pkl", "data/0"):
        path = _zip_member_bomb(tmp_path / f"b{len(member)}.pt", member, 0xF0000000)
        with pytest.raises(SSNetError, match="would inflate to 4027 MB"):
            read_card(path)
    code = ("import resource, sys\nfrom ssnet_ros import load_checkpoint, SSNetError\n"
            "try:\n    load_checkpoint(sys.argv[1])\nexcept SSNetError as e:\n    print(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=120)
    elapsed = time.monotonic() - start
    message, peak_kb = out.stdout.strip().splitlines()
    assert "refused unread" in message, out
    assert int(peak_kb) < 1.5 * 1024 * 1024 and elapsed < 60, (peak_kb, elapsed)
    assert 50e6 < max_tensor_bytes() < 1.5e9  # derived from the architectures


def test_shipped_weights_pass_the_archive_check() -> None:
    from ssnet_ros.core.checkpoint import check_archive
    from ssnet_ros.core.segmenter import resolve_weights

    check_archive(Path(resolve_weights("ssnet_camvid")))
