"""The documentation holds together: README.md and docs/*.md have no broken relative link,
anchor or image, and the node's parameter table agrees with the parameter specs and
config/ssnet.yaml (a parameter added to the specs must appear in both)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PARAMETER_TABLE = ROOT / "docs" / "node.md"


def prose(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks, inline code removed."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            out.append(re.sub(r"`[^`]*`", "", line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of ``path`` (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    fence = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"#{1,6} +(.*?)#*\s*$", line)
        if m:
            base = slug(m[1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    problems = []
    for line in prose(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            name, _, anchor = target.partition("#")
            dest = (page.parent / name).resolve() if name else page
            if not dest.exists():
                problems.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    return problems


def test_readme_and_docs_have_no_broken_links_anchors_or_images() -> None:
    problems = [p for page in PAGES for p in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_finds_what_is_broken(tmp_path: Path) -> None:
    """The check above could fail: a missing file, a missing heading and a missing image."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: here\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-code-heading-here) [self](#page)\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere) ![img](pic.png)\n"
                    "```bash\n[not a link](nowhere.md)\n```\n[web](https://example.com/x)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = broken_links(page)
    finally:
        ROOT = saved
    assert problems == ["page.md: missing.md (no such file)",
                        "page.md: other.md#nowhere (no such heading)",
                        "page.md: pic.png (no such file)"]


def test_the_readme_is_a_front_page() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "make demo" in text and "rosdep install" in text


TYPES = {"STRING": "string", "INTEGER": "integer", "DOUBLE": "double", "BOOL": "bool",
         "STRING_ARRAY": "string array", "DOUBLE_ARRAY": "double array",
         "INTEGER_ARRAY": "integer array"}


def shown(value: Any) -> str:
    """A default as the table writes it (inside backticks)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return repr(value)


def parameter_table() -> dict[str, list[str]]:
    """Name -> cells of the table under '## Parameters' in docs/node.md."""
    lines = PARAMETER_TABLE.read_text().splitlines()
    start = lines.index("## Parameters")
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if rows and not line.startswith("|"):
            break  # the first table only
        m = re.match(r"\| `([a-z_0-9]+)` \|(.*)\|$", line)
        if m:
            rows[m[1]] = [c.strip() for c in m[2].split("|")]
    return rows


def test_the_parameter_table_matches_the_specs_and_the_params_file() -> None:
    pytest.importorskip("rclpy")
    from ssnet_ros.ros.parameters import PARAMETERS

    table = parameter_table()
    specs = {s.name: s for s in PARAMETERS}
    assert list(table) == list(specs), "docs/node.md's table: same parameters, same order"
    for name, spec in specs.items():
        kind, default, _, changeable, description = table[name]
        assert kind == TYPES[spec.type.name], name
        assert default == f"`{shown(spec.default)}`", name
        assert changeable == ("yes" if spec.dynamic else "no"), name
        assert description, name
    data = yaml.safe_load((ROOT / "config" / "ssnet.yaml").read_text())
    assert data["/**"]["ros__parameters"] == {s.name: s.default for s in PARAMETERS}


def test_the_table_parser_reads_every_row() -> None:
    """The check above could fail: the parser sees the rows the page has."""
    table = parameter_table()
    assert len(table) > 20 and table["camera_pose"][1] == "`[]`"
    assert table["overlay_alpha"][3] == "yes"
