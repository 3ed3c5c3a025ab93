"""Demo: segment a folder of images through the real ROS 2 node and save what it publishes.

    .venv/bin/ssnet-demo --images DIR --weights FILE --out demo_out

Without --images it segments the three KITTI road frames shipped with the package
(ssnet_ros/samples: CC BY-NC-SA 3.0, see the README there). Starts the node in its own process
(real DDS, localhost only, the large-image Fast DDS profile), publishes every image of DIR in
name order as a sensor_msgs/Image (frame_id
``camera``), waits for the node's outputs and writes, per image NAME, NAME_input.png,
NAME_color.png, NAME_overlay.png, NAME_drivable.png, NAME_labels.png (the class id of every
pixel as its grey value, 0-10 for CamVid classes: it looks black; NAME_color.png is the same
labels in the class colours) and NAME_panel.png (class overlay above the drivable mask tinted
over the image, with a class-colour legend) into --out, and README.txt saying so. Where DIR
holds calibration.yaml (camera_calibration_parsers layout plus camera_pose, as the samples
do), or else for KITTI-sized frames (KITTI's published calibration, camera 1.65 m above the
road, level), it also publishes camera_info, sets the node's camera_pose and writes
NAME_grid.png: the node's segmentation/drivable_grid, 40 m ahead and 20 m to each side
(drivable green, not drivable red, unknown grey; legend, scale and title in the picture). It
checks that grid against the node's published labels projected independently (OpenCV's
projectPoints of every cell centre) and measures the ego lane (|y| < 1 m, 6-20 m ahead);
grid_check.json holds both per frame. With a checkpoint whose card has a drivable trust model
(docs/trust.md) it records the node's segmentation/drivable_trust per image (trust.json, and in
each panel's title).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import SSNetError
from ..core import options as cli
from ..core.checkpoint import read_card
from ..core.fileio import read_rgb, write_json, write_png
from ..core.segmenter import DEFAULT_WEIGHTS, TRAIN_HINT, default_weights, resolve_weights
from ..core.ground_grid import Camera, GridSpec, grid_picture, kitti_camera, resolved_range
from ..core.visualize import panel

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
OUTPUTS = ("labels", "drivable_mask", "color", "overlay")


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-demo."""
    p = cli.parser("ssnet-demo", __doc__)
    p.add_argument("--images", default="",
                   help="folder of images (png, jpg, ...); default: the shipped KITTI samples")
    cli.add(p, "--weights")
    p.add_argument("--out", default="demo_out", help="output folder")
    cli.add(p, "--input-height", "--input-width", "--device", "--drivable-floor",
            "--drivable-connected", "--limit")
    p.add_argument("--encoding", choices=("bgr8", "rgb8"), default="bgr8",
                   help="encoding of the published images, bgr8 like most cameras")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the node to start and for each image")
    cli.add(p, "--overwrite", "--no-progress")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


SAMPLES = Path(__file__).resolve().parents[1] / "samples"
"""Three KITTI road test frames shipped with the package (CC BY-NC-SA 3.0) and their camera."""
CALIBRATION = "calibration.yaml"


def find_images(folder: str) -> list[Path]:
    """The images in ``folder`` (default: the shipped samples) sorted by name; raise SSNetError
    saying how to give some."""
    how = "give a folder of images, e.g. `make demo IMAGES=/path/to/pngs`"
    path = Path(folder).expanduser() if folder else SAMPLES
    if not path.is_dir():
        raise SSNetError(f"image folder {path} does not exist; {how}")
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SSNetError(f"image folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} files; {how}")
    return images


def find_weights(weights: str) -> Path:
    """``weights`` or the shipped default; raise SSNetError saying how to get a checkpoint."""
    if weights:
        path = resolve_weights(weights)
        if not path.is_file():
            raise SSNetError(f"weights file {path} does not exist; {TRAIN_HINT}")
        return path
    default = default_weights()
    if default is None:
        raise SSNetError(f"no weights given and this installation ships none ({DEFAULT_WEIGHTS})"
                         f"; `make demo` needs WEIGHTS=/path/to/checkpoint.pt: {TRAIN_HINT}")
    return default


DEMO_GRID = GridSpec(resolution=0.1, x_range=(0.0, 40.0), y_range=(-20.0, 20.0))
KITTI_HEIGHT = 1.65
"""Metres from the road to KITTI's cameras (the demo's camera_pose: level, at the origin)."""


def load_calibration(folder: Path) -> Camera | None:
    """The camera of ``folder``'s calibration.yaml (K, size, distortion and camera_pose), or
    None where there is none; SSNetError naming the file when it cannot be used."""
    path = folder / CALIBRATION
    if not path.is_file():
        return None
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
        return Camera(tuple(float(v) for v in doc["camera_matrix"]["data"]),
                      int(doc["image_width"]), int(doc["image_height"]),
                      tuple(float(v) for v in doc.get("camera_pose", (0, 0, KITTI_HEIGHT,
                                                                      0, 0, 0))),
                      tuple(float(v) for v in doc.get("distortion_coefficients", {})
                            .get("data", ())), str(doc.get("distortion_model", "plumb_bob")))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise SSNetError(f"cannot use {path}: {exc!r} (expected image_width, image_height, "
                         f"camera_matrix.data and camera_pose)") from None


def is_level(pose: tuple[float, ...]) -> bool:
    """A camera at the grid origin's x, y, looking along x (only its height set)."""
    return not any(pose[:2]) and not any(pose[3:])


OUTPUT_README = """\
Written by ssnet-demo, per input image NAME:
  NAME_input.png     the image as sent to the node
  NAME_panel.png     the one to look at: class overlay above the drivable mask, with a legend
  NAME_color.png     every pixel in its class colour (segmentation/color)
  NAME_overlay.png   the class colours blended over the image (segmentation/overlay)
  NAME_drivable.png  the drivable mask: 255 drivable, 0 not (segmentation/drivable_mask)
  NAME_labels.png    the class id of every pixel as its grey value (segmentation/labels):
                     ids are small numbers ({ids}), so it looks black; the ids are
                     {classes}
  NAME_grid.png      where a calibration is known: the bird's-eye drivable grid
                     (segmentation/drivable_grid), with its legend and scale
grid_check.json      that grid against the labels projected by OpenCV, per frame
"""


def is_kitti_size(height: int, width: int) -> bool:
    """Frames of KITTI's colour cameras (1224-1242 x 370-376)."""
    return 1224 <= width <= 1242 and 370 <= height <= 376


def opencv_grid(labels: np.ndarray, drivable_ids: list[int], k: list[float], pose_z: float,
                grid: GridSpec) -> np.ndarray:
    """The grid the labels give, projected independently of ssnet_ros' projection code: each
    cell centre through OpenCV's projectPoints (a level camera ``pose_z`` m above z = 0 at the
    grid origin), 0 where the label there is drivable, 100 where not, -1 outside the image."""
    import cv2

    h, w = labels.shape
    xs, ys = grid.centres()
    pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    rot = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # optical <- grid
    uv, _ = cv2.projectPoints(pts, cv2.Rodrigues(rot)[0], -rot @ np.array([0.0, 0.0, pose_z]),
                              np.reshape(np.asarray(k, float), (3, 3)), None)
    u, v = np.floor(uv.reshape(-1, 2)).astype(np.int64).T
    seen = (pts[:, 0] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    out = np.full(xs.size, -1, np.int8)
    out[seen] = np.where(np.isin(labels[v[seen], u[seen]], drivable_ids), 0, 100)
    return out.reshape(xs.shape)


def grid_check(grid: np.ndarray, independent: np.ndarray) -> dict[str, float]:
    """How the node's grid compares with the independent projection, and its ego lane."""
    both = (grid != -1) & (independent != -1)
    xs, ys = DEMO_GRID.centres()
    ego = (xs > 6.0) & (xs < 20.0) & (np.abs(ys) < 1.0)
    return {"cells_seen": int((grid != -1).sum()),
            "agreement": float((grid[both] == independent[both]).mean()) if both.any() else 0.0,
            "claimed_unseen": int(((grid != -1) & (independent == -1)).sum()),
            "ego_lane_seen": float((grid[ego] != -1).mean()),
            "ego_lane_drivable": float((grid[ego] == 0).sum() / max(1, (grid[ego] != -1).sum()))}


def pixels(msg: object) -> np.ndarray:
    """An rgb8 or mono8 output Image as a numpy array."""
    channels = 3 if msg.encoding == "rgb8" else 1  # type: ignore[attr-defined]
    data = np.frombuffer(msg.data, np.uint8)  # type: ignore[attr-defined]
    data = data.reshape(msg.height, msg.step)[:, :msg.width * channels]  # type: ignore
    return data.reshape(msg.height, msg.width, channels).squeeze(2) if channels == 1 \
        else data.reshape(msg.height, msg.width, 3)  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    """Segment every image; return the exit status."""
    size = cli.input_size(args)  # ValueError: a bad argument, before any work
    rule = cli.drivable_rule(args)
    images = find_images(args.images)[:args.limit or None]
    calibration = load_calibration(images[0].parent)
    weights = find_weights(args.weights)
    card = read_card(weights)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise SSNetError(f"output folder {out} exists and is not empty; pass --overwrite to "
                         f"write into it")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    import rclpy
    from tqdm import tqdm

    from ..ros.client import SegmentationClient, image_msg, start_node, stop_node, \
        use_large_image_profile

    profile = use_large_image_profile()
    namespace = f"/ssnet_demo_{os.getpid()}"  # away from any other ssnet on this domain
    height, width = size or (0, 0)
    pose = list(calibration.pose) if calibration else [0.0, 0.0, KITTI_HEIGHT, 0.0, 0.0, 0.0]
    params = {"weights": str(weights), "input_height": height, "input_width": width,
              "device": args.device, "camera_pose": pose, "drivable_floor": rule.floor,
              "drivable_connected": rule.connected,
              "grid_resolution": DEMO_GRID.resolution, "grid_x_range": list(DEMO_GRID.x_range),
              "grid_y_range": list(DEMO_GRID.y_range)}
    log = tempfile.NamedTemporaryFile("w+", prefix="ssnet_demo_node_", suffix=".log")
    proc = start_node(params, {"__ns": namespace}, stdout=log)  # stderr too
    context = rclpy.Context()
    rclpy.init(context=context)
    client = SegmentationClient(context, outputs=OUTPUTS, namespace=namespace,
                                name="ssnet_demo")
    from nav_msgs.msg import OccupancyGrid
    from sensor_msgs.msg import CameraInfo

    grids_in: dict[tuple[int, int], OccupancyGrid] = {}
    client.node.create_subscription(
        OccupancyGrid, "segmentation/drivable_grid",
        lambda g: grids_in.__setitem__((g.header.stamp.sec, g.header.stamp.nanosec), g), 2)
    from sensor_msgs.msg import RelativeHumidity

    trust_in: dict[tuple[int, int], float] = {}
    client.node.create_subscription(
        RelativeHumidity, "segmentation/drivable_trust",
        lambda t: trust_in.__setitem__((t.header.stamp.sec, t.header.stamp.nanosec),
                                       float(t.relative_humidity)), 10)
    info_pub = client.node.create_publisher(CameraInfo, "camera_info", 10)
    drivable_ids = [card.class_names.index(c) for c in card.drivable_classes]
    checks: dict[str, dict[str, float]] = {}
    trusts: dict[str, float] = {}
    try:
        print(f"weights {weights.name}: trained on data licensed as: "
              f"{card.licence() or 'not recorded'}")
        print(f"starting the node ({weights}; Fast DDS profile {profile}) ...")
        if not client.wait_for_node(args.timeout, proc):
            log.seek(0)
            print(f"error: the node did not come up:\n{log.read().strip()}", file=sys.stderr)
            return 1
        start, done, drivable, grids = time.monotonic(), 0, [], 0
        for path in tqdm(images, desc="segmenting", unit="image", disable=args.no_progress):
            try:
                rgb = read_rgb(path)
            except OSError as exc:
                tqdm.write(f"skipping {path.name}: {exc}")
                continue
            result = None
            kitti = calibration is not None or is_kitti_size(*rgb.shape[:2])
            if kitti:
                camera = calibration.scaled(*rgb.shape[:2]) if calibration \
                    else kitti_camera(rgb.shape[1], rgb.shape[0])
                info_pub.publish(CameraInfo(width=rgb.shape[1], height=rgb.shape[0],
                                            k=list(camera.k), d=list(camera.d) or [0.0] * 5,
                                            distortion_model=camera.distortion_model))
                client.spin_until(lambda: False, 0.05)
            for _ in range(3):  # a best-effort image can be lost; send it again
                msg = image_msg(rgb, time.time_ns(), "camera", encoding=args.encoding)
                client.send(msg)
                result = client.wait_outputs(msg.header, timeout=args.timeout, proc=proc)
                if result is not None or proc.poll() is not None:
                    break
            if result is None:
                log.seek(0)
                print(f"error: no answer for {path.name}:\n{log.read().strip()[-2000:]}",
                      file=sys.stderr)
                return 1
            outputs = {key: pixels(result[key]) for key in OUTPUTS}
            stem = out / path.stem
            stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            title = path.name
            if card.trust and client.spin_until(lambda: stamp in trust_in, 5.0, proc):
                trusts[path.name] = trust_in[stamp]
                title += f" - drivable trust {trust_in[stamp]:.2f}"
            write_png(f"{stem}_input.png", rgb)
            write_png(f"{stem}_color.png", outputs["color"])
            write_png(f"{stem}_overlay.png", outputs["overlay"])
            write_png(f"{stem}_drivable.png", outputs["drivable_mask"])
            write_png(f"{stem}_labels.png", outputs["labels"])
            write_png(f"{stem}_panel.png",
                      panel(rgb, outputs["overlay"], outputs["drivable_mask"] > 0,
                            card.class_names, card.palette, title=title))
            if kitti and client.spin_until(lambda: stamp in grids_in, 10.0, proc):
                g = grids_in[stamp]
                data = np.array(g.data, np.int8).reshape(g.info.height, g.info.width)
                reach = resolved_range(camera)
                write_png(f"{stem}_grid.png", grid_picture(
                    data, DEMO_GRID, cell_px=1, title=f"{path.name}: drivable grid, forward up",
                    note=f"unknown beyond ~{reach:.0f} m: there one image row spans > 0.5 m "
                         f"of road"))
                if is_level(camera.pose):  # the independent check assumes a level camera
                    checks[path.name] = grid_check(data, opencv_grid(
                        outputs["labels"], drivable_ids, list(camera.k), camera.pose[2],
                        DEMO_GRID))
                grids += 1
            elif kitti:
                tqdm.write(f"no drivable grid came for {path.name}")
            drivable.append(float((outputs["drivable_mask"] > 0).mean()))
            done += 1
        seconds = time.monotonic() - start
        if trusts:
            write_json(out / "trust.json", trusts)
            low = sorted(trusts, key=trusts.get)[0]
            print(f"drivable trust: mean {np.mean(list(trusts.values())):.2f}, lowest "
                  f"{trusts[low]:.2f} ({low}) (trust.json)")
        out.mkdir(parents=True, exist_ok=True)
        (out / "README.txt").write_text(OUTPUT_README.format(
            ids=f"0-{len(card.class_names) - 1}",
            classes=", ".join(f"{i} {n}" for i, n in enumerate(card.class_names))))
        if checks:
            write_json(out / "grid_check.json", checks)
            agree = min(c["agreement"] for c in checks.values())
            lanes = [c["ego_lane_drivable"] for c in checks.values()]
            print(f"drivable grid: agrees with the published labels projected by OpenCV on "
                  f"at least {100 * agree:.2f}% of the seen cells of every frame; ego lane "
                  f"6-20 m ahead drivable: mean {100 * np.mean(lanes):.1f}%, "
                  f"{sum(v >= 0.9 for v in lanes)} of {len(lanes)} frames at least 90% "
                  f"(grid_check.json)")
        print(f"segmented {done} of {len(images)} images in {seconds:.1f} s "
              f"({seconds / max(done, 1):.2f} s per image through the node); "
              f"mean drivable area {100 * np.mean(drivable) if drivable else 0:.1f}%; "
              f"wrote 6 PNGs per image to {out.resolve()}/"
              + (f" and a drivable grid (NAME_grid.png) for {grids} frames" if grids else "")
              + f"; start with {out / images[0].stem}_panel.png; README.txt there says "
                f"what each file is")
        return 0 if done == len(images) else 1
    finally:
        client.close()
        stop_node(proc)
        rclpy.try_shutdown(context=context)
        log.close()


@cli.entry_point("ssnet-demo", interrupted="the images written so far are kept")
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (ssnet-demo)."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
