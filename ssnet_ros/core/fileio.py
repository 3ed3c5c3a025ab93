"""Atomic file writing: readers never see a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    Works for files and directories. On error the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_png(path: str | Path, rgb_or_gray: Any) -> None:
    """Write an RGB (HxWx3) or single-channel uint8 image as PNG, atomically."""
    import cv2
    import numpy as np

    image = np.asarray(rgb_or_gray)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def read_rgb(path: str | Path) -> Any:
    """Read an image file as HxWx3 uint8 RGB; raise OSError naming the file when unreadable.

    PNG and JPEG files have their stated size checked before decoding
    (:mod:`ssnet_ros.core.image_limits`); EXIF orientation is ignored, as for camera frames."""
    import cv2

    from ..errors import SSNetError
    from .image_limits import check_size, decode_image, is_png_or_jpeg

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise OSError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if is_png_or_jpeg(data):
        try:
            return decode_image(data, f"image {path}")
        except SSNetError as exc:
            raise OSError(str(exc)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8),
                         cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data else None
    if image is None:
        raise OSError(f"cannot read image {path}")
    try:
        check_size(*image.shape[:2])
    except SSNetError as exc:
        raise OSError(f"image {path}: {exc}") from None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_file_output(path: str | Path, overwrite: bool) -> None:
    """Raise SSNetError unless ``path`` may become a new file: free, or an existing regular
    file with ``overwrite``."""
    from ..errors import SSNetError

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise SSNetError(f"output {path} exists; pass --overwrite to replace it")
    if path.is_dir() or path.is_symlink():
        raise SSNetError(f"output {path} exists and is not a regular file; not replacing it "
                         f"even with --overwrite")
