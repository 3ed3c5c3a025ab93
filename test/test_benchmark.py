"""The issue-5 benchmark: FLOPs from the model, device peaks, a quick CPU run of its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssnet_ros.tools.benchmark import count_flops, cuda_peak, main, parse_size
from ssnet_ros.errors import SSNetError
from ssnet_ros.models import build_model


def ssnet_macs_per_pixel(num_classes: int) -> int:
    """SSNet's multiply-accumulates per input pixel, written out layer by layer."""
    stages = [  # (pixel fraction, (in, out) of every 3x3 convolution: encoder, then decoder)
        (1, [(3, 64), (64, 64), (64, 64), (64, 64)]),
        (1 / 4, [(64, 128), (128, 128), (128, 128), (128, 64)]),
        (1 / 16, [(128, 256), (256, 256), (256, 256), (256, 256), (256, 256), (256, 128)]),
        (1 / 64, [(256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 256)]),
    ]
    macs = sum(share * 9 * cin * cout for share, convs in stages for cin, cout in convs)
    return int(macs + 64 * num_classes)  # + the 1x1 classifier


def test_flops_are_counted_from_the_model() -> None:
    model = build_model("ssnet", num_classes=11)
    assert ssnet_macs_per_pixel(11) == 592_256
    assert count_flops(model, 384, 1248) == 2 * 592_256 * 384 * 1248
    # 1242x375 is computed padded to 1248x384 (multiples of 16): ~0.57 TFLOP per frame
    assert count_flops(model, 375, 1242) == count_flops(model, 384, 1248)
    assert count_flops(build_model("fcn8s", num_classes=11), 64, 96) > 0


def test_known_device_peaks() -> None:
    tf32 = torch.backends.cudnn.allow_tf32
    assert cuda_peak("NVIDIA H100 80GB HBM3", "fp16")[0] == pytest.approx(989.4)
    assert cuda_peak("NVIDIA H100 PCIe", "bf16")[0] == pytest.approx(756.5)
    assert cuda_peak("NVIDIA H200", "fp16")[0] == pytest.approx(989.4)
    assert cuda_peak("NVIDIA A100-SXM4-80GB", "fp32")[0] == (156.0 if tf32 else 19.5)
    assert "Orin" in cuda_peak("Orin (nvgpu)", "fp16")[1]
    assert cuda_peak("Some Future GPU", "fp16") is None


def test_sizes_are_height_by_width() -> None:
    assert parse_size("375x1242") == (375, 1242)
    with pytest.raises(SSNetError, match="HxW"):
        parse_size("1242")


def test_a_small_cpu_run_prints_the_table(ssnet_checkpoint: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = main(["--weights", str(ssnet_checkpoint), "--sizes", "48x64", "--batches", "1,2",
                 "--precisions", "fp32", "--stages", "model,core", "--frames", "1",
                 "--warmup", "0", "--threads", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "| stage | camera HxW | batch |" in text and "TFLOP/s" in text
    assert text.count("| stage | camera HxW |") == 1  # the table once
    assert "measured matmul peak" in text and "kMAC per camera pixel" in text
    assert "x matmul" in text and "% of peak" not in text  # a CPU rate is not a bound
    result = json.loads(out.read_text())
    assert [(r["stage"], r["batch"]) for r in result["rows"]] == \
        [("model", 1), ("core", 1), ("model", 2), ("core", 2)]
    for row in result["rows"]:
        assert row["fps"] > 0 and row["tflops"] > 0 and row["peak"] > 0


def test_two_checkpoints_side_by_side(ssnet_checkpoint: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import save_random_checkpoint

    fcn = save_random_checkpoint(tmp_path / "fcn8s_random.pt", model_name="fcn8s")
    out = tmp_path / "bench.json"
    code = main(["--weights", str(ssnet_checkpoint), str(fcn), "--sizes", "48x64",
                 "--batches", "1", "--precisions", "fp32", "--stages", "model",
                 "--frames", "1", "--warmup", "0", "--threads", "1", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "| weights | architecture | classes | parameters |" in text
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["rows"]] == ["ssnet_random", "fcn8s_random"]
    models = result["models"]
    assert models["ssnet_random"]["architecture"] == "ssnet"
    assert models["fcn8s_random"]["architecture"] == "fcn8s"
    for name, arch in (("ssnet_random", "ssnet"), ("fcn8s_random", "fcn8s")):
        built = build_model(arch, num_classes=11)
        assert models[name]["parameters"] == sum(p.numel() for p in built.parameters())
        assert models[name]["flops_per_frame"]["48x64"] == count_flops(built, 48, 64)


def test_a_missing_second_checkpoint_is_named(ssnet_checkpoint: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pt"
    assert main(["--weights", str(ssnet_checkpoint), str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_bad_arguments_fail_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sizes", "375"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssnet-benchmark: ") and "HxW" in err and len(err.splitlines()) == 1
    assert main(["--batches", "0"]) == 2


def test_the_grid_stage_measures_the_drivable_grid_beside_the_core(
        ssnet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--weights", str(ssnet_checkpoint), "--sizes", "60x160", "--batches", "1,2",
                 "--precisions", "fp32", "--stages", "core,grid", "--frames", "1",
                 "--warmup", "0", "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "drivable grid 400x400 cells from 2 camera(s) 60x160" in text
    result = json.loads(out.read_text())
    assert [(r["stage"], r["batch"]) for r in result["rows"]] == \
        [("core", 1), ("grid", 1), ("core", 2), ("grid", 2)]
    for g in result["grid"]:
        assert g["cells"] == "400x400 cells" and 0 < g["grid_ms"] and g["core_ms"] > 0
        assert g["share_of_core"] == pytest.approx(g["grid_ms"] / g["core_ms"])


def test_core_flops_are_counted_at_the_network_size(ssnet_checkpoint: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The core stage runs at the rule's network size (here 48x64 -> 24x32): its TFLOP/s
    counts that size's FLOPs, the model stage (camera size) the camera's."""
    from ssnet_ros.core.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(ssnet_checkpoint)
    rule = {"reference_pixels": 24.0 * 32.0, "reference_focal_px": 50.0, "min_scale": 0.1,
            "max_scale": 1.0, "multiple": 8.0}
    weights = save_checkpoint(tmp_path / "ruled.pt", model, card.replace(input_rule=rule))
    out = tmp_path / "bench.json"
    assert main(["--weights", str(weights), "--sizes", "48x64", "--batches", "1",
                 "--precisions", "fp32", "--stages", "model,core", "--frames", "1",
                 "--warmup", "0", "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    rows = {r["stage"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["core"]["note"] == "network 24x32"
    assert rows["model"]["tflops"] == pytest.approx(
        rows["model"]["fps"] * count_flops(model, 48, 64) / 1e12)
    assert rows["core"]["tflops"] == pytest.approx(
        rows["core"]["fps"] * count_flops(model, 24, 32) / 1e12)
