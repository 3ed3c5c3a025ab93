"""One command-line convention: every console script answers --help in plain words, and the
shared options have the same names, help and defaults in every tool (ssnet_ros.core.options)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ssnet_ros.core import options
from ssnet_ros.core.segmenter import PRECISIONS

ROOT = Path(__file__).resolve().parents[1]
# options that share a name but not the meaning, written down in docs/command_line.md
EXCEPTIONS = {
    ("ssnet-train", "--batch-size"): "crops per training step",
    ("ssnet-export", "--batch-size"): "the exported graph's batch dimension",
    ("ssnet-export", "--input-height"): "required: the exported size",
    ("ssnet-export", "--input-width"): "required: the exported size",
    ("ssnet-benchmark", "--weights"): "several checkpoints, timed side by side",
}
# the same idea must not go by another name
FORBIDDEN = ("--height", "--width", "--batch", "--check-limit", "--json", "--size",
             "--image-height", "--image-width", "--progress", "--force")


def console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    entries = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str) and " = ssnet_ros." in n.value]
    return dict(tuple(part.strip() for part in e.split("=")) for e in entries)


def run_help(name: str, target: str) -> str:
    """``name --help`` through the installed console script (the module's entry point where
    the package is not installed)."""
    script = Path(sys.executable).parent / name
    if script.is_file():
        cmd = [str(script), "--help"]
    else:
        module, func = target.split(":")
        cmd = [sys.executable, "-c", f"import sys; sys.argv[0] = {name!r}; "
               f"from {module} import {func}; sys.exit({func}())", "--help"]
    env = {**os.environ, "COLUMNS": "1000"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def parse_options(text: str) -> dict[str, str]:
    """flag -> help line of argparse --help output (unwrapped with COLUMNS=1000)."""
    found: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if not m:
            continue
        flags, help_text = m.group(1), m.group(2)
        if help_text is None and i + 1 < len(lines) and lines[i + 1].startswith(" " * 10):
            help_text = lines[i + 1].strip()
        for flag in re.findall(r"--[a-z][a-z0-9-]*", flags):
            found[flag] = help_text or ""
    return found


SCRIPTS = console_scripts()


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    return {name: run_help(name, target) for name, target in SCRIPTS.items()}


def test_every_tool_is_found() -> None:
    assert {"ssnet-train", "ssnet-eval", "ssnet-eval-bag", "ssnet-replay", "ssnet-make-bag",
            "ssnet-export", "ssnet-benchmark", "ssnet-demo", "segmentation_node"} <= set(SCRIPTS)


def test_help_is_plain_words(helps: dict[str, str]) -> None:
    for name, text in helps.items():
        assert "``" not in text and ":mod:" not in text and ":func:" not in text, name
        assert "\x1b[" not in text, name
        if name == "segmentation_node":
            continue
        assert text.startswith(f"usage: {name} "), (name, text[:80])
        for flag, help_text in parse_options(text).items():
            assert help_text, f"{name} {flag} has no help"


def test_shared_options_have_one_name_help_and_default(helps: dict[str, str]) -> None:
    uses: dict[str, list[str]] = {}
    for name, text in helps.items():
        if name == "segmentation_node":
            continue
        found = parse_options(text)
        for flag in FORBIDDEN:
            assert flag not in found, f"{name} spells a shared idea {flag}"
        for flag, option in options.SHARED.items():
            if flag not in found or (name, flag) in EXCEPTIONS:
                continue
            uses.setdefault(flag, []).append(name)
            assert found[flag].startswith(option.help), (name, flag, found[flag])
            if option.action is None:
                assert f"(default: {option.default})" in found[flag], (name, flag)
    # the convention is used, not only defined
    assert len(uses["--weights"]) >= 5 and len(uses["--overwrite"]) >= 7
    assert len(uses["--no-progress"]) >= 7 and len(uses["--limit"]) >= 6
    assert len(uses["--device"]) >= 5


def test_every_tool_that_writes_refuses_to_overwrite(helps: dict[str, str]) -> None:
    for name, text in helps.items():
        if name in ("segmentation_node", "ssnet-train"):  # train: --resume continues a run
            continue
        if "--out" in parse_options(text):
            assert "--overwrite" in parse_options(text), name


def test_precisions_match_the_segmenter() -> None:
    for precision in PRECISIONS:
        assert precision in options.PRECISION.help


def test_sizes_are_height_first() -> None:
    assert options.parse_size("375x1242") == (375, 1242)
    assert options.format_size(375, 1242) == "375x1242"
    with pytest.raises(ValueError, match="HxW"):
        options.parse_size("1242,375")


def test_a_bad_size_is_one_line_before_any_work(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ssnet_ros.training.evaluate", "--dataset",
                           "camvid", "--root", str(tmp_path), "--out", str(tmp_path / "r"),
                           "--input-height", "100"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("ssnet-eval: give both --input-height and --input-width, "
                                   "or neither")
