"""``ssnet-make-bag``: a folder of camera images (and label PNGs) -> a rosbag2 for evaluation.

Frames are ordered by name with numbers compared as numbers, which keeps CamVid's sequence and
frame order (0001TP_006690 before 0001TP_006720, frame_9 before frame_10), and stamped
``--start + i / --rate``. Each image goes on ``--topic`` (raw rgb8, or jpeg/png as a
CompressedImage); a label PNG named like its image (CamVid ``valannot/<name>.png``, KITTI road
``<prefix>_road_<n>.png``, Cityscapes ``*_gtFine_labelIds.png``) goes on ``--truth-topic`` as a
mono8 Image with the same header. Images without a label file simply have no ground truth.
With ``--calibration FX FY CX CY`` (pixels, for images of ``--calibration-size``, default the
first image's size) a sensor_msgs/CameraInfo goes beside the image topic as a camera driver
publishes it (``/camera/image_raw`` -> ``/camera/camera_info``), one per frame, same header.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import messages as bm
from .bagfile import SENSOR_QOS, STORAGES, TRUTH_TOPIC_KEY, BagWriter, natural_key, qos
from .truth import FRAME_NAMES_KEY, LABEL_FORMAT_KEY, LABEL_FORMATS, label_decoder
from ..errors import SSNetError
from ..core import options as cli
from ..core.fileio import read_rgb
from ..core.decode import TRANSPORTS, camera_info_topic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")
FORMATS = ("raw", "jpeg", "png")
#: The input transport that carries each --format (ssnet_ros.core.decode.TRANSPORTS).
FORMAT_TRANSPORT = {"raw": TRANSPORTS["raw"], "jpeg": TRANSPORTS["compressed"],
                    "png": TRANSPORTS["compressed"]}
DEFAULT_START = 1_700_000_000.0
"""Default stamp of the first frame (seconds since the epoch): bags are reproducible."""


@dataclass
class MadeBag:
    """What ssnet-make-bag wrote."""

    path: Path
    frames: int
    labelled: int
    topic: str
    truth_topic: str | None
    info_topic: str | None = None


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` in natural name order."""
    if not folder.is_dir():
        raise SSNetError(f"image folder {folder} is not a directory")
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise SSNetError(f"image folder {folder} holds no images "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    return sorted(images, key=lambda p: natural_key(p.name))


def label_candidates(image: Path, labels: Path) -> list[Path]:
    """Where the label PNG of ``image`` may be in ``labels`` (CamVid, KITTI, Cityscapes)."""
    stem = image.stem
    names = [stem]
    if "_leftImg8bit" in stem:
        names.append(stem.replace("_leftImg8bit", "_gtFine_labelIds"))
    if "_" in stem:
        prefix, number = stem.rsplit("_", 1)
        names.append(f"{prefix}_road_{number}")
    return [labels / f"{n}.png" for n in names]


def make_bag(images: str | Path, out: str | Path, *, labels: str | Path | None = None,
             label_format: str = "raw", topic: str = "/camera/image_raw",
             truth_topic: str = "/ground_truth/labels", rate: float = 30.0,
             start: float = DEFAULT_START, frame_id: str = "camera", fmt: str = "raw",
             storage: str = "mcap", overwrite: bool = False, limit: int | None = None,
             progress: bool = True,
             calibration: Sequence[float] | None = None,
             calibration_size: tuple[int, int] | None = None) -> MadeBag:
    """Write the bag; return what it holds. ``calibration`` (fx, fy, cx, cy) for images of
    ``calibration_size`` (height, width; default the first image's) adds camera_info."""
    if calibration is not None and (len(calibration) != 4 or not all(
            math.isfinite(v) for v in calibration) or calibration[0] <= 0 or
            calibration[1] <= 0):
        raise SSNetError(f"calibration must be fx fy cx cy with fx, fy > 0, got "
                         f"{list(calibration)}")
    if rate <= 0:
        raise SSNetError(f"rate must be > 0 frames per second, got {rate}")
    if fmt not in FORMATS:
        raise SSNetError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    files = list_images(Path(images))[:limit]
    if labels is not None and not Path(labels).is_dir():
        raise SSNetError(f"label folder {labels} is not a directory")
    decode = label_decoder(label_format)
    pairs = []
    for image in files:
        found = next((p for p in label_candidates(image, Path(labels)) if p.is_file()), None) \
            if labels is not None else None
        pairs.append((image, found))
    labelled = sum(label is not None for _, label in pairs)
    if labels is not None and labelled == 0:
        raise SSNetError(f"no image in {images} has a label PNG of the same name in {labels}")
    start_ns = int(round(start * 1e9))
    stamps = [start_ns + int(round(i * 1e9 / rate)) for i in range(len(pairs))]
    custom = {FRAME_NAMES_KEY: json.dumps({str(s): img.stem for s, (img, _) in
                                           zip(stamps, pairs)})}
    if labelled:
        custom[LABEL_FORMAT_KEY] = label_format
        custom[TRUTH_TOPIC_KEY] = truth_topic
    kind = FORMAT_TRANSPORT[fmt]
    msgtype = kind.msgtype
    info_topic = camera_info_topic(topic.removesuffix(kind.topic_suffix)) if calibration \
        else None
    info_size = calibration_size
    with BagWriter(out, storage=storage, overwrite=overwrite, custom=custom) as writer:
        writer.add_topic(topic, msgtype, [SENSOR_QOS])
        if info_topic:
            writer.add_topic(info_topic, bm.CAMERA_INFO, [SENSOR_QOS])
        if labelled:
            writer.add_topic(truth_topic, bm.IMAGE, [qos(True, 10)])
        for stamp, (image, label) in tqdm(list(zip(stamps, pairs)), desc="make bag",
                                          unit="frame", disable=not progress, file=sys.stderr):
            try:
                rgb = read_rgb(image)
            except OSError as exc:
                raise SSNetError(str(exc)) from None
            hdr = bm.header(stamp, frame_id)
            msg = bm.image(rgb, hdr) if fmt == "raw" else bm.compressed(rgb, hdr, fmt)
            writer.write(topic, stamp, msg)
            if info_topic and calibration:
                info_size = info_size or rgb.shape[:2]
                writer.write(info_topic, stamp, bm.camera_info(
                    hdr, info_size[1], info_size[0], *calibration))
            if label is not None:
                truth = decode(label)
                if truth.shape != rgb.shape[:2]:
                    raise SSNetError(f"label {label} is {truth.shape[1]}x{truth.shape[0]} but "
                                     f"image {image} is {rgb.shape[1]}x{rgb.shape[0]}")
                writer.write(truth_topic, stamp, bm.image(truth, hdr))
    return MadeBag(Path(out), len(pairs), labelled, topic, truth_topic if labelled else None,
                   info_topic)


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-make-bag."""
    p = cli.parser("ssnet-make-bag", __doc__)
    p.add_argument("images", type=Path, help="folder of camera images")
    p.add_argument("--out", required=True, type=Path, help="the rosbag2 directory to write")
    p.add_argument("--labels", type=Path, default=None, help="folder of label PNGs")
    p.add_argument("--label-format", choices=LABEL_FORMATS, default="raw",
                   help="how the label PNGs encode classes (raw: values are class ids; a "
                        "dataset name: that dataset's label files)")
    p.add_argument("--topic", default=None,
                   help="image topic (default /camera/image_raw, or .../compressed for jpeg "
                        "and png)")
    p.add_argument("--truth-topic", default="/ground_truth/labels",
                   help="topic of the mono8 label images")
    p.add_argument("--fps", type=float, default=30.0,
                   help="frames per second of the recorded stream (stamps 1/fps apart)")
    p.add_argument("--start", type=float, default=DEFAULT_START,
                   help="stamp of the first frame in seconds since the epoch")
    p.add_argument("--frame-id", default="camera", help="header.frame_id of every image")
    p.add_argument("--format", choices=FORMATS, default="raw",
                   help="raw: sensor_msgs/Image rgb8; jpeg, png: sensor_msgs/CompressedImage")
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="rosbag2 storage")
    p.add_argument("--calibration", nargs=4, type=float, default=None,
                   metavar=("FX", "FY", "CX", "CY"),
                   help="write a camera_info topic beside the image topic with this pinhole "
                        "K (pixels; no distortion)")
    p.add_argument("--calibration-size", type=cli.parse_size, default=None, metavar="HxW",
                   help="the image size the calibration is for (default: the first image's)")
    cli.add(p, "--limit", "--overwrite", "--no-progress")
    return p


@cli.entry_point("ssnet-make-bag", interrupted="no bag written", prefix="error: ")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ssnet-make-bag."""
    args = build_parser().parse_args(argv)
    topic = args.topic or "/camera/image_raw" + FORMAT_TRANSPORT[args.format].topic_suffix
    problem = (f"--fps {args.fps} must be a finite number > 0"
               if not (math.isfinite(args.fps) and args.fps > 0) else
               f"--start {args.start} must be a finite number of seconds >= 0"
               if not (math.isfinite(args.start) and args.start >= 0) else
               f"--limit {args.limit} must be >= 0 (0: all images)"
               if args.limit < 0 else
               "--calibration-size needs --calibration"
               if args.calibration_size and not args.calibration else None)
    if problem:
        raise cli.UsageError(problem)
    made = make_bag(args.images, args.out, labels=args.labels,
                    label_format=args.label_format, topic=topic,
                    truth_topic=args.truth_topic, rate=args.fps, start=args.start,
                    frame_id=args.frame_id, fmt=args.format, storage=args.storage,
                    overwrite=args.overwrite, limit=args.limit or None,
                    progress=not args.no_progress, calibration=args.calibration,
                    calibration_size=args.calibration_size)
    truth = f", {made.labelled} labels on {made.truth_topic}" if made.truth_topic else ""
    info = f", camera_info on {made.info_topic}" if made.info_topic else ""
    print(f"wrote {made.path}: {made.frames} frames on {made.topic}{truth}{info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
