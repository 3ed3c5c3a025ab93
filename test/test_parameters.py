"""The node's settings, validated in one place (ssnet_ros.ros.parameters): the specs' ranges for
start-up values and run-time changes alike, device and precision resolved once, the transport
table's names, and the grid defaults the node and ssnet-eval-bag share."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy")

import torch  # noqa: E402

from ssnet_ros.core.decode import TRANSPORTS  # noqa: E402
from ssnet_ros.core.drivable import DrivableRule  # noqa: E402
from ssnet_ros.core.ground_grid import GRID_FRAME, GridSpec  # noqa: E402
from ssnet_ros.errors import SSNetError  # noqa: E402
from ssnet_ros.ros.parameters import PARAMETERS, SPECS, change_problem, updated, \
    validate  # noqa: E402


def defaults(**changes: object) -> dict[str, object]:
    values = {spec.name: spec.default for spec in PARAMETERS}
    values.update(changes)
    return values


def test_device_and_precision_are_resolved_once_into_the_settings() -> None:
    s = validate(defaults(device="cpu", precision="bf16"))
    assert s.torch_device == torch.device("cpu") and s.dtype == torch.bfloat16
    with pytest.raises(SSNetError, match="^parameter device: device 'gpu' is not a torch"):
        validate(defaults(device="gpu"))
    with pytest.raises(SSNetError, match="^parameter precision: precision fp16 needs a CUDA"):
        validate(defaults(device="cpu", precision="fp16"))


def test_the_transports_are_the_decode_table() -> None:
    for name in TRANSPORTS:
        assert validate(defaults(input_transport=name)).input_transport == name
    with pytest.raises(SSNetError, match="^parameter input_transport: input transport 'theora' "
                                         "is not one of raw, compressed"):
        validate(defaults(input_transport="theora"))
    assert SPECS["input_transport"].constraints == " | ".join(TRANSPORTS)


@pytest.mark.parametrize("name, bad, good", [("overlay_alpha", 1.5, 0.3),
                                             ("trust_threshold", -0.1, 0.9),
                                             ("drivable_floor", 2.0, 0.4),
                                             ("batch_wait_ms", 5000.0, 10.0)])
def test_every_range_is_the_specs_at_start_up_and_at_run_time(name: str, bad: float,
                                                               good: float) -> None:
    low, high = SPECS[name].range
    assert change_problem(name, bad) == f"{name} {bad} is outside {low:g}..{high:g}"
    assert change_problem(name, good) is None
    with pytest.raises(SSNetError, match=f"^parameter {name} {bad} is outside"):
        validate(defaults(**{name: bad}))


def test_a_change_updates_only_what_it_names() -> None:
    s = validate(defaults())
    new = updated(s, {"drivable_floor": 0.4, "publish_color": False, "overlay_alpha": 0.2})
    assert new.drivable_rule == DrivableRule(0.4, s.drivable_rule.connected)
    assert new.publish == {**s.publish, "color": False} and new.overlay_alpha == 0.2
    assert (new.trust_threshold, new.grid, new.device) == (s.trust_threshold, s.grid, s.device)
    assert updated(new, {"drivable_connected": True}).drivable_rule == DrivableRule(0.4, True)


def test_the_grid_defaults_are_gridspecs_for_the_node_and_eval_bag() -> None:
    from ssnet_ros.bags.evaluate import build_parser

    grid = GridSpec()
    assert validate(defaults()).grid == grid
    assert (SPECS["grid_resolution"].default, SPECS["grid_x_range"].default,
            SPECS["grid_y_range"].default, SPECS["grid_frame"].default) == (
        grid.resolution, list(grid.x_range), list(grid.y_range), GRID_FRAME)
    args = build_parser().parse_args(["bag", "--out", "o"])
    assert (args.grid_resolution, args.grid_x_range, args.grid_y_range, args.grid_frame) == (
        grid.resolution, list(grid.x_range), list(grid.y_range), GRID_FRAME)
