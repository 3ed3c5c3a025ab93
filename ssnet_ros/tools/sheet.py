"""``ssnet-sheet``: one picture of the drivable mask over a folder of frames, for a quick look.

Each frame is segmented with the inference core (the same Segmenter as the node, automatic
input size unless given), the drivable mask is tinted green over the image, and the tiles are
laid out in a grid with captions. Beside the PNG, a JSON file holds per frame the drivable
share of the *ego-lane box* (bottom fifth of the image, middle third of its width: the asphalt
right in front of the car), the proxy for holes in the ego lane.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .demo import find_images
from ..errors import SSNetError
from ..core import options as cli
from ..core.fileio import read_rgb, write_json, write_png
from ..core.segmenter import Segmenter
from ..core.visualize import DRIVABLE_TINT, tint

TINT = DRIVABLE_TINT


def ego_lane_share(drivable: np.ndarray) -> float:
    """Drivable share of the box right in front of the car (bottom 1/5, middle 1/3)."""
    h, w = drivable.shape
    box = drivable[h - h // 5:, w // 3: w - w // 3]
    return float(box.mean()) if box.size else 0.0


def tile(image: np.ndarray, drivable: np.ndarray, caption: str, width: int) -> np.ndarray:
    """The image with the drivable mask tinted over it, the ego-lane box and a caption."""
    out = tint(image, drivable)
    h, w = drivable.shape
    cv2.rectangle(out, (w // 3, h - h // 5), (w - w // 3, h - 1), (255, 255, 0), 2)
    height = max(1, round(h * width / w))
    out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
    bar = np.full((26, width, 3), 255, np.uint8)
    cv2.putText(bar, caption, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([bar, out], axis=0)


def grid(tiles: Sequence[np.ndarray], columns: int, title: str) -> np.ndarray:
    """Tiles (padded to one height) in rows of ``columns``, under a title and legend bar."""
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    padded = [np.pad(t, ((0, th - t.shape[0]), (0, tw - t.shape[1]), (0, 0)),
                     constant_values=255) for t in tiles]
    while len(padded) % columns:
        padded.append(np.full((th, tw, 3), 255, np.uint8))
    rows = [np.concatenate(padded[i:i + columns], axis=1)
            for i in range(0, len(padded), columns)]
    body = np.concatenate(rows, axis=0)
    head = np.full((34, body.shape[1], 3), 255, np.uint8)
    cv2.rectangle(head, (8, 9), (28, 27), tuple(int(v) for v in TINT), -1)
    cv2.putText(head, f"drivable   (yellow box: ego lane)   {title}", (36, 25),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([head, body], axis=0)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-sheet."""
    p = cli.parser("ssnet-sheet", __doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of frames (png, jpg, ...)")
    p.add_argument("--out", required=True, type=Path, help="PNG to write (JSON beside it)")
    cli.add(p, "--weights", "--input-height", "--input-width")
    p.add_argument("--focal-px", type=float, default=0.0,
                   help="camera focal length in pixels for the automatic size (0: unknown)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image")
    cli.add(p, "--device", "--limit")
    p.add_argument("--columns", type=int, default=3, help="frames per row")
    p.add_argument("--tile-width", type=int, default=400,
                   help="width of each frame in the sheet, pixels")
    cli.add(p, "--overwrite", "--no-progress")
    return p


@cli.entry_point("ssnet-sheet", interrupted="nothing written")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-sheet."""
    args = build_parser().parse_args(argv)
    size = cli.input_size(args)
    if args.out.exists() and not args.overwrite:
        raise SSNetError(f"{args.out} exists; pass --overwrite to replace it")
    if args.columns < 1 or args.tile_width < 64:
        raise SSNetError("--columns must be >= 1 and --tile-width >= 64")
    images = find_images(args.images)[:args.limit or None]
    seg = Segmenter(args.weights, device=args.device, input_size=size,
                    focal_px=args.focal_px or None, flip=args.flip)
    tiles, frames = [], []
    for path in tqdm(images, desc="segment", disable=args.no_progress, file=sys.stderr):
        rgb = read_rgb(path)
        result = seg(rgb, confidence=False)
        share = ego_lane_share(result.drivable)
        net = seg.network_size(*rgb.shape[:2]) or rgb.shape[:2]
        frames.append({"image": path.name, "size": list(rgb.shape[:2]),
                       "network_input": list(net), "ego_lane_drivable": share,
                       "drivable_share": float(result.drivable.mean())})
        tiles.append(tile(rgb, result.drivable, f"{path.stem}  ego lane "
                          f"{100 * share:.0f}% drivable", args.tile_width))
    title = f"{Path(str(seg.weights)).stem}, {len(images)} frames"
    write_png(args.out, grid(tiles, args.columns, title))
    holes = [f["image"] for f in frames if f["ego_lane_drivable"] < 0.9]
    write_json(args.out.with_suffix(".json"), {
        "weights": str(seg.weights), "flip": args.flip, "frames": frames,
        "frames_with_ego_lane_holes": holes,
        "rule": "ego-lane box (bottom 1/5, middle 1/3) less than 90% drivable"})
    print(f"{len(images)} frames, {len(holes)} with ego-lane holes (< 90% of the ego-lane box "
          f"drivable): {', '.join(holes) or 'none'}; sheet written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
