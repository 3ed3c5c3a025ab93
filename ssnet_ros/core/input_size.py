"""The network input size that shows a camera's world at the scale the model was trained for.

A model trained on CamVid-sized views (objects as large as in 480x360 CamVid frames, within
its scale augmentation) fails when a 1242x375 KITTI or 2048x1024 Cityscapes frame shows the
world two to five times larger in pixels. The rule, with its constants in the model card
(``ModelCard.input_rule``):

- with the camera's focal length ``f`` (pixels, ``camera_info`` K[0]):
  ``scale = reference_focal_px / f``;
- without it: ``scale = sqrt(reference_pixels / (height * width))``, i.e. the frame is
  resized to the pixel count of the training frames, keeping its aspect ratio;

clamped to ``[min_scale, max_scale]``, each side rounded to a multiple of ``multiple``.
``max_scale`` 1.0 never enlarges a frame: on the IDD-Lite hold-out (320x227 frames) the
multi-domain SSNet scored a drivable IoU of 85.2 at the native size against 83.9 enlarged
1.55x to CamVid's pixel count (first 80 frames).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

RULE_KEYS = ("reference_pixels", "reference_focal_px", "min_scale", "max_scale", "multiple")

#: The rule of the shipped multi-domain model. CamVid's 480x360 frames are the reference
#: (172,800 pixels); its camera's focal length at 480x360 is estimated as 420 px, which
#: makes KITTI's 721.5 px camera run at 0.58x (measured best near 0.6x). Frames smaller than
#: CamVid's run at their own size.
DEFAULT_RULE: dict[str, float] = {"reference_pixels": 480.0 * 360.0,
                                  "reference_focal_px": 420.0, "min_scale": 0.1,
                                  "max_scale": 1.0, "multiple": 8.0}


def rule_problems(rule: Mapping[str, float]) -> list[str]:
    """What is wrong with an input-size rule (empty when it is usable; {} means none)."""
    if not rule:
        return []
    missing = [k for k in RULE_KEYS if k not in rule]
    if missing:
        return [f"input_rule lacks {', '.join(missing)}"]
    try:
        values = {k: float(rule[k]) for k in RULE_KEYS}
    except (TypeError, ValueError):
        return ["input_rule values must be numbers"]
    if not all(math.isfinite(v) and v > 0 for v in values.values()):
        return ["input_rule values must be finite and positive"]
    if values["min_scale"] > values["max_scale"]:
        return ["input_rule min_scale exceeds max_scale"]
    return []


def auto_scale(rule: Mapping[str, float], height: int, width: int,
               focal_px: float | None = None) -> float:
    """The resize factor the rule gives a ``height`` x ``width`` frame (see module doc)."""
    if focal_px is not None and math.isfinite(focal_px) and focal_px > 0:
        scale = float(rule["reference_focal_px"]) / focal_px
    else:
        scale = math.sqrt(float(rule["reference_pixels"]) / (height * width))
    return min(float(rule["max_scale"]), max(float(rule["min_scale"]), scale))


def auto_input_size(rule: Mapping[str, float], height: int, width: int,
                    focal_px: float | None = None) -> tuple[int, int] | None:
    """(height, width) for the network, or None to run at the frame's own size.

    An empty rule (checkpoints from before the rule) always gives None."""
    if not rule:
        return None
    scale = auto_scale(rule, height, width, focal_px)
    if abs(scale - 1.0) < 1e-6:
        return None
    m = int(rule["multiple"])
    size = (max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m))
    return None if size == (height, width) else size


BYTES_PER_INPUT_PIXEL = 1600
"""Peak memory one frame takes per network-input pixel (fp32 activations of the larger of the
shipped architectures: SSNet 1,570 B measured on the CPU between 320x240 and 640x480, FCN-8s
640 B). 16384x16384 would need 430 GB; 2048x4096 13 GB."""
MEMORY_SHARE = 0.5
"""Share of the device's memory (RAM for the CPU, the GPU's own for CUDA) one frame may take."""
MAX_INPUT_PIXELS = 4096 * 4096
"""Largest network input, as the largest accepted image (:mod:`ssnet_ros.core.image_limits`)."""


def device_memory(device: object = "cpu") -> int | None:
    """Bytes of memory of ``device`` (a torch device or its name): the machine's RAM for the
    CPU, the GPU's total memory for CUDA; None when unknown."""
    import os

    kind = str(device)
    if kind.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.get_device_properties(torch.device(kind)).total_memory)
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def input_size_problem(height: int, width: int, device: object = "cpu") -> str | None:
    """Why a fixed network input of ``height`` x ``width`` cannot run on ``device`` (the
    memory one frame needs, :data:`BYTES_PER_INPUT_PIXEL`), or None when it can."""
    pixels = int(height) * int(width)
    need = pixels * BYTES_PER_INPUT_PIXEL
    if pixels > MAX_INPUT_PIXELS:
        return (f"a network input of {width}x{height} ({pixels:,} pixels) is larger than the "
                f"largest accepted image (4096x4096, {MAX_INPUT_PIXELS:,} pixels); one frame "
                f"would need about {need / 2**30:.1f} GiB")
    memory = device_memory(device)
    if memory is not None and need > MEMORY_SHARE * memory:
        return (f"a network input of {width}x{height} needs about {need / 2**30:.1f} GiB per "
                f"frame, more than {MEMORY_SHARE:.0%} of the {memory / 2**30:.1f} GiB of "
                f"{device} memory here; use at most about "
                f"{int(MEMORY_SHARE * memory / BYTES_PER_INPUT_PIXEL) / 1e6:.1f} MP")
    return None
