"""The command-line convention shared by every ``ssnet-*`` tool (docs/command_line.md).

The same idea has the same option name, meaning and default in every tool that has it: weights
by shipped name or path (default: the shipped SSNet), the network input size as
``--input-height``/``--input-width`` (sizes are always height first, written ``HxW``), batch
size, limit, device, precision, output path, ``--overwrite`` and ``--no-progress``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SSNetError
from .drivable import DEFAULT_CONNECTED, DEFAULT_FLOOR, DrivableRule

DEFAULT_WEIGHTS_NAME = "ssnet_camvid"


class UsageError(SSNetError, ValueError):
    """A bad command-line argument (an SSNetError, and a ValueError for callers that check
    values)."""


Main = Callable[[Sequence[str] | None], int]


def entry_point(prog: str, interrupted: str, prefix: str = "") -> Callable[[Main], Main]:
    """Decorate a tool's ``main``: an SSNetError becomes one line ``PROG: [prefix]message``
    on stderr and status 2; Ctrl-C one line ``PROG: interrupted; <interrupted>`` and 130."""
    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except SSNetError as exc:
                print(f"{prog}: {prefix}{exc}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
                return 130
        return run
    return wrap


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends each option's default to its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default == "" or default == [] \
            or default is argparse.SUPPRESS
        if not hidden and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the shared help format; ``description`` in plain words."""
    return argparse.ArgumentParser(prog=prog, description=plain(description),
                                   formatter_class=HelpFormatter)


def plain(text: str) -> str:
    """Docstring text without reStructuredText markup (double backquotes, :role:`x`)."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


@dataclass(frozen=True)
class Option:
    """One shared option: its flag, default and help."""

    flag: str
    default: Any
    help: str
    type: Any = None
    action: Any = None

    def add(self, p: argparse.ArgumentParser | Any, **override: Any) -> None:
        kwargs: dict[str, Any] = {"default": self.default, "help": self.help}
        if self.action:
            kwargs["action"] = self.action
            if self.action == "store_true":
                kwargs.pop("default")
        elif self.type is not None:
            kwargs["type"] = self.type
        kwargs.update(override)
        p.add_argument(self.flag, **kwargs)


WEIGHTS = Option("--weights", DEFAULT_WEIGHTS_NAME,
                 "weights: a shipped name (ssnet_camvid, fcn8s_camvid) or a checkpoint path")
INPUT_HEIGHT = Option("--input-height", 0, "network input height in pixels; 0: the model "
                      "card's rule from the image size", type=int)
INPUT_WIDTH = Option("--input-width", 0, "network input width in pixels; 0: the model "
                     "card's rule from the image size", type=int)
BATCH_SIZE = Option("--batch-size", 1, "images per forward pass", type=int)
LIMIT = Option("--limit", 0, "use only the first N images or frames; 0: all", type=int)
DEVICE = Option("--device", "auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
PRECISION = Option("--precision", "auto", "auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16")
THREADS = Option("--threads", 0, "CPU threads; 0: all cores", type=int)
OVERWRITE = Option("--overwrite", False, "replace an existing output", action="store_true")
NO_PROGRESS = Option("--no-progress", False, "no progress bars", action="store_true")
DRIVABLE_FLOOR = Option("--drivable-floor", DEFAULT_FLOOR,
                        "confidence floor 0..1 of the drivable decision: a drivable-labelled "
                        "pixel less confident than this is not drivable and takes its most "
                        "likely non-drivable class; 0: off (docs/drivable.md)", type=float)
DRIVABLE_CONNECTED = Option("--drivable-connected", DEFAULT_CONNECTED,
                            "keep only the drivable area connected to the road in front of "
                            "the vehicle (the bottom centre of the image); the rest takes its "
                            "most likely non-drivable class (docs/drivable.md)",
                            action=argparse.BooleanOptionalAction)

SHARED = {o.flag: o for o in (WEIGHTS, INPUT_HEIGHT, INPUT_WIDTH, BATCH_SIZE, LIMIT, DEVICE,
                              PRECISION, THREADS, OVERWRITE, NO_PROGRESS, DRIVABLE_FLOOR,
                              DRIVABLE_CONNECTED)}


def add(p: argparse.ArgumentParser | Any, *flags: str) -> None:
    """Add the shared options named by ``flags`` (e.g. "--weights", "--overwrite")."""
    for flag in flags:
        SHARED[flag].add(p)


def input_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """(height, width) from --input-height/--input-width, None when both are 0 (the rule);
    raises UsageError when only one is given or either is negative."""
    h, w = args.input_height, args.input_width
    if h < 0 or w < 0:
        raise UsageError(f"--input-height/--input-width must be positive, got {h}x{w}")
    if (h == 0) != (w == 0):
        raise UsageError("give both --input-height and --input-width, or neither")
    return (h, w) if h else None


def drivable_rule(args: argparse.Namespace) -> DrivableRule:
    """The DrivableRule of --drivable-floor/--drivable-connected; UsageError when the floor is
    outside 0..1."""
    try:
        return DrivableRule(float(args.drivable_floor), bool(args.drivable_connected))
    except SSNetError as exc:
        raise UsageError(f"--drivable-floor: {exc}") from None


def format_size(height: int, width: int) -> str:
    """The one way sizes are written: height first, ``HxW``."""
    return f"{height}x{width}"


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (height first) as (height, width); UsageError naming the expected form."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"size {text!r} is not HxW (height first, e.g. 375x1242)") from None
    if h <= 0 or w <= 0:
        raise UsageError(f"size {text!r} must be positive")
    return h, w
