"""ONNX export of SSNet and FCN-8s for onnxruntime and TensorRT (``ssnet-export``).

    .venv/bin/ssnet-export --weights ssnet_camvid --out ssnet_360x480.onnx \\
        --input-height 360 --input-width 480 [--batch-size 4 | --dynamic-batch] \\
        [--dynamic-size] [--unpool native] [--end-to-end] [--check-images DIR]

The graph takes normalised NCHW float32 images and returns logits (``--end-to-end``: NHWC
uint8 RGB in, normalisation inside, uint8 labels out). By default SSNet's max-pool indices
and max-unpooling are exported as an exact index-free equivalent (the first maximum of each
2x2 window as a mask), because TensorRT parses neither MaxPool's indices output nor
MaxUnpool; ``--unpool native`` keeps MaxPool-with-indices + ScatterND (onnxruntime only).
``--check-images`` compares the labels of onnxruntime (CPU) and PyTorch on real images.
The file carries the model card as ONNX metadata (:func:`onnx_metadata`, read back with
:func:`read_onnx_card`): class names, palette, drivable classes, normalisation, input size and
layout, and the exporting package version.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import options as cli
from ..core.checkpoint import ModelCard, load_checkpoint
from ..core.fileio import atomic_path, check_file_output
from ..errors import SSNetError
from ..models import SSNet
from ..models.padding import pad_to_multiple
from ..core.preprocessing import normalize
from ..core.segmenter import resolve_weights

OPSET = 18
UNPOOL_MODES = ("portable", "native")


def _first_max_pool(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2/2 max pooling and a one-hot mask (N, C, H/2, W/2, 4) of each window's first
    maximum in row-major order: exactly where ``max_pool2d(return_indices=True)`` points."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, h // 2, w // 2, 4)
    top = win.amax(dim=-1, keepdim=True)
    h0, h1, h2, h3 = (win == top).unbind(-1)
    first = torch.stack([h0, h1 & ~h0, h2 & ~(h0 | h1), h3 & ~(h0 | h1 | h2)], dim=-1)
    return top.squeeze(-1), first


def _mask_unpool(x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """``max_unpool2d`` with the mask of :func:`_first_max_pool` instead of indices."""
    n, c, h, w = x.shape
    up = x.unsqueeze(-1) * first.to(x.dtype)
    return up.reshape(n, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


class PortableSSNet(nn.Module):
    """SSNet computed without pooling indices (same weights, same outputs bit for bit)."""

    def __init__(self, net: SSNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes, H, W) of an (N, 3, H, W) input, as :meth:`SSNet.forward`."""
        net = self.net
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, net.size_divisor)
        masks: list[torch.Tensor] = []
        for stage in net.encoder:
            x, first = _first_max_pool(stage(x))
            masks.insert(0, first)
        for i, stage in enumerate(net.decoder):
            x = stage(_mask_unpool(x, masks[i]))
        return net.classifier(x)[..., :h, :w]


class EndToEnd(nn.Module):
    """NHWC uint8 RGB in, uint8 class labels out (normalisation and argmax in the graph)."""

    def __init__(self, net: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(card.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(card.std, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, H, W) uint8 labels."""
        x = normalize(image, self.mean, self.std)
        return self.net(x).argmax(dim=1).to(torch.uint8)


def exportable(model: nn.Module, unpool: str = "portable") -> nn.Module:
    """``model`` ready for export: SSNet made index-free unless ``unpool`` is 'native'."""
    if unpool not in UNPOOL_MODES:
        raise SSNetError(f"unpool {unpool!r} is not one of {', '.join(UNPOOL_MODES)}")
    if isinstance(model, SSNet) and unpool == "portable":
        return PortableSSNet(model).eval()
    return model.eval()


def export_onnx(model: nn.Module, card: ModelCard, path: str | Path, *, height: int,
                width: int, batch: int = 1, dynamic_batch: bool = False,
                dynamic_size: bool = False, unpool: str = "portable",
                end_to_end: bool = False, verbose: bool = False) -> Path:
    """Write ``model`` (fp32, CPU) as ONNX to ``path`` and return the path.

    The input is ``batch`` x 3 x ``height`` x ``width`` (NHWC uint8 with ``end_to_end``).
    ``dynamic_batch`` lets the batch size vary (1..64). ``dynamic_size`` lets height and width
    vary as multiples of the model's size divisor (16 SSNet, 32 FCN-8s; pad to it), which
    then ``height`` and ``width`` must be; a fixed size may be anything (padding and cropping
    are in the graph).
    """
    divisor = int(getattr(model, "size_divisor", 1))
    if dynamic_size and (height % divisor or width % divisor):
        raise SSNetError(f"--dynamic-size exports need a height and width that are multiples "
                         f"of {divisor} (got {height}x{width})")
    net = exportable(model.float().cpu(), unpool)
    if end_to_end:
        net = EndToEnd(net, card).eval()
        example = torch.zeros((batch, height, width, 3), dtype=torch.uint8)
        hw_axes = (1, 2)
    else:
        example = torch.zeros((batch, 3, height, width))
        hw_axes = (2, 3)
    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1, max=64)
    if dynamic_size:
        dims[hw_axes[0]] = divisor * torch.export.Dim("height_blocks", min=1, max=8192 // divisor)
        dims[hw_axes[1]] = divisor * torch.export.Dim("width_blocks", min=1, max=8192 // divisor)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    output = "labels" if end_to_end else "logits"
    quiet = contextlib.nullcontext() if verbose else _quiet()
    with quiet, torch.no_grad():
        try:
            program = torch.onnx.export(
                net, (example,), dynamo=True, opset_version=OPSET, input_names=["image"],
                output_names=[output], dynamic_shapes=({**dims},) if dims else None,
                verbose=False)
        except ImportError as exc:
            raise SSNetError(f"ONNX export needs onnxscript ({exc}); pip install "
                             f"onnxscript (see requirements.txt)") from exc
        except Exception as exc:
            raise SSNetError(f"ONNX export failed: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:400]}") from exc
        with atomic_path(path) as tmp:
            program.save(str(tmp))
            _add_metadata(tmp, onnx_metadata(card, height=height, width=width, batch=batch,
                                             dynamic_batch=dynamic_batch,
                                             dynamic_size=dynamic_size,
                                             end_to_end=end_to_end, unpool=unpool))
    return path


def onnx_metadata(card: ModelCard, *, height: int, width: int, batch: int = 1,
                  dynamic_batch: bool = False, dynamic_size: bool = False,
                  end_to_end: bool = False, unpool: str = "portable") -> dict[str, str]:
    """The metadata_props an exported file carries: the model card (JSON) and the facts a
    runtime needs without reading the PyTorch checkpoint, all as strings."""
    from .. import __version__

    layout = "NHWC uint8 RGB" if end_to_end else "NCHW float32, normalised"
    return {
        "ssnet_ros.card": json.dumps(card.to_dict(), sort_keys=True),
        "model": card.model,
        "class_names": json.dumps(list(card.class_names)),
        "palette": json.dumps([list(c) for c in card.palette]),
        "drivable_classes": json.dumps(list(card.drivable_classes)),
        "mean": json.dumps(list(card.mean)),
        "std": json.dumps(list(card.std)),
        "input_size": "dynamic" if dynamic_size else f"{height}x{width}",
        "batch_size": "1..64" if dynamic_batch else str(batch),
        "input_layout": layout,
        "output": "labels (NHW uint8)" if end_to_end else "logits (NCHW float32)",
        "unpool": unpool,
        "exported_by": f"ssnet_ros {__version__}",
    }


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Store ``metadata`` as the ONNX file's metadata_props (keeping external data inline)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def read_onnx_card(path: str | Path) -> ModelCard:
    """The model card stored in an exported ONNX file; SSNetError naming the file otherwise."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SSNetError(f"ONNX file {path} cannot be read ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if "ssnet_ros.card" not in props:
        raise SSNetError(f"ONNX file {path} carries no ssnet_ros model card (exported by "
                         f"another tool, or before cards were stored)")
    return ModelCard.from_dict(json.loads(props["ssnet_ros.card"]))


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the exporter's progress prints, warnings and logs."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def onnx_session(path: str | Path, threads: int = 0) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads`` 0: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def label_parity(model: nn.Module, card: ModelCard, session: Any,
                 images: Sequence[np.ndarray], progress: bool = False) -> dict[str, float]:
    """Labels of onnxruntime vs PyTorch (fp32, CPU) on RGB images of the exported size.

    Returns the fraction of identical label pixels, the largest logit difference and the
    largest logit magnitude (for scale).
    """
    same = total = 0
    max_diff = max_abs = 0.0
    model = model.float().cpu().eval()
    from tqdm import tqdm

    for image in tqdm(images, desc="parity check", unit="image", disable=not progress,
                      file=sys.stderr):
        batch = torch.from_numpy(np.ascontiguousarray(image)[None])
        x = normalize(batch, card.mean, card.std)
        with torch.inference_mode():
            ref = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        same += int(np.sum(ref.argmax(1) == got.argmax(1)))
        total += ref.shape[2] * ref.shape[3]
        max_diff = max(max_diff, float(np.abs(ref - got).max()))
        max_abs = max(max_abs, float(np.abs(ref).max()))
    return {"identical": same / total, "pixels": float(total), "max_logit_diff": max_diff,
            "max_abs_logit": max_abs}


def read_images(folder: str | Path, limit: int = 0) -> list[np.ndarray]:
    """RGB arrays of the PNG/JPEG files in ``folder`` in name order (first ``limit``)."""
    import cv2

    files = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if limit:
        files = files[:limit]
    if not files:
        raise SSNetError(f"no PNG or JPEG images in {folder}")
    return [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            for p in files]


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ssnet-export."""
    p = cli.parser("ssnet-export", __doc__.split("\n\n")[0])
    cli.add(p, "--weights")
    p.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    p.add_argument("--input-height", type=int, required=True, help="network input height")
    p.add_argument("--input-width", type=int, required=True, help="network input width")
    p.add_argument("--batch-size", type=int, default=1,
                   help="batch size of the graph's input (default: 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="batch size 1..64 at run time")
    p.add_argument("--dynamic-size", action="store_true",
                   help="height and width vary (multiples of 16 SSNet / 32 FCN-8s)")
    p.add_argument("--unpool", choices=UNPOOL_MODES, default="portable",
                   help="portable (TensorRT and onnxruntime) or native (MaxPool indices + "
                        "ScatterND; onnxruntime only)")
    p.add_argument("--end-to-end", action="store_true",
                   help="uint8 NHWC RGB in, uint8 labels out")
    p.add_argument("--check-images", default="",
                   help="folder of images (of the input size) whose labels onnxruntime and "
                        "PyTorch must agree on")
    cli.add(p, "--limit", "--threads", "--overwrite", "--no-progress")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Raise SSNetError for arguments that would fail later, before any work."""
    if args.input_height < 1 or args.input_width < 1:
        raise SSNetError(f"--input-height and --input-width must be positive, got "
                         f"{args.input_height}x{args.input_width}")
    if max(args.input_height, args.input_width) > 8192:
        raise SSNetError(f"input size {args.input_height}x{args.input_width} is larger than "
                         f"8192 pixels on a side")
    if args.batch_size < 1 or args.batch_size > 64:
        raise SSNetError(f"--batch-size must be 1..64, got {args.batch_size}")
    if args.check_images and (args.end_to_end or (args.batch_size != 1 and
                                                  not args.dynamic_batch)):
        raise SSNetError("--check-images needs a batch-1 (or --dynamic-batch) logits export")
    if args.check_images and not Path(args.check_images).is_dir():
        raise SSNetError(f"--check-images folder {args.check_images} does not exist")
    check_file_output(args.out, args.overwrite)


@cli.entry_point("ssnet-export", interrupted="no file written")
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = parse_args(argv)
    check_args(args)
    model, card = load_checkpoint(resolve_weights(args.weights))
    start = time.perf_counter()
    path = export_onnx(model, card, args.out, height=args.input_height,
                       width=args.input_width, batch=args.batch_size,
                       dynamic_batch=args.dynamic_batch, dynamic_size=args.dynamic_size,
                       unpool=args.unpool, end_to_end=args.end_to_end)
    print(f"wrote {path} ({card.model}, {args.input_height}x{args.input_width}, unpool "
          f"{args.unpool}, model card in its metadata) in "
          f"{time.perf_counter() - start:.1f} s")
    if args.check_images:
        if args.threads:
            torch.set_num_threads(args.threads)
        images = read_images(args.check_images, args.limit)
        size = (args.input_height, args.input_width)
        wrong = [im.shape for im in images if im.shape[:2] != size]
        if wrong:
            raise SSNetError(f"{len(wrong)} images are not {size[0]}x{size[1]} "
                             f"(HxW; e.g. {wrong[0][0]}x{wrong[0][1]})")
        result = label_parity(model, card, onnx_session(path, args.threads), images,
                              progress=not args.no_progress)
        print(f"onnxruntime vs PyTorch on {len(images)} images: "
              f"{100 * result['identical']:.4f}% of {int(result['pixels'])} label pixels "
              f"identical, max logit difference {result['max_logit_diff']:.2e} "
              f"(logits up to {result['max_abs_logit']:.1f})")
    return 0


__all__ = ["EndToEnd", "PortableSSNet", "export_onnx", "exportable", "label_parity",
           "onnx_metadata", "onnx_session", "read_images", "read_onnx_card"]

if __name__ == "__main__":
    sys.exit(main())
