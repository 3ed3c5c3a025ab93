"""The package's folders are its layers: the inference core imports without ROS, and each
subpackage imports only the layers below it, and no module imports one that imports it back
(read from the source, so a new import that breaks the layering fails here)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ssnet_ros

PACKAGE = Path(ssnet_ros.__file__).parent
CORE = ["ssnet_ros", "ssnet_ros.errors", "ssnet_ros.models", "ssnet_ros.datasets"] + [
    m.name for m in pkgutil.walk_packages([str(PACKAGE / "core")], "ssnet_ros.core.")] + [
    m.name for m in pkgutil.walk_packages([str(PACKAGE / "training")], "ssnet_ros.training.")]
ROS_PACKAGES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs",
                "builtin_interfaces", "rosidl_runtime_py", "rpyutils")
# what each layer may import from this package (besides itself)
LAYERS = {
    "errors": set(),
    "models": {"errors"},
    "core": {"errors", "models"},
    "datasets": {"errors", "core"},
    "training": {"errors", "models", "core", "datasets"},
    "ros": {"errors", "models", "core"},
    "bags": {"errors", "core", "datasets", "ros"},
    "tools": {"errors", "models", "core", "datasets", "training", "ros", "bags"},
}


def ros_modules_after_importing(modules: list[str]) -> list[str]:
    code = (f"import importlib, json, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {ROS_PACKAGES!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def imported_layers(path: Path) -> set[str]:
    """The first-level ssnet_ros subpackages/modules a source file imports."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = list(module[:-1]) if module[-1] != "__init__" else list(module[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[0] != "ssnet_ros":
                continue
            if len(target) > 1:
                found.add(target[1])
            else:  # from ssnet_ros import X: a module, or the package's own __version__
                found.update(a.name for a in node.names if not a.name.startswith("__"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ssnet_ros" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.timeout(150)
def test_core_modules_do_not_import_ros() -> None:
    assert len(CORE) > 15
    assert ros_modules_after_importing(CORE) == []


@pytest.mark.timeout(150)
def test_the_check_sees_ros_imports() -> None:
    pytest.importorskip("sensor_msgs")
    assert "sensor_msgs" in ros_modules_after_importing(["ssnet_ros.ros.conversions"])


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        layer = parts[0]
        if layer not in LAYERS:  # the package's __init__ and the node entry point
            continue
        for used in imported_layers(path) - LAYERS[layer] - {layer}:
            wrong.append(f"{path.relative_to(PACKAGE)} imports ssnet_ros.{used}")
    assert wrong == []


def test_the_layer_check_reads_relative_imports(tmp_path: Path) -> None:
    assert imported_layers(PACKAGE / "core" / "segmenter.py") >= {"errors"}
    assert "core" in imported_layers(PACKAGE / "ros" / "node.py")


def test_every_module_is_used() -> None:
    """Each module is imported somewhere in the package, is a console script/entry point, or is
    run by a make target (``python -m``)."""
    setup = (PACKAGE.parent / "setup.py").read_text()
    makefile = (PACKAGE.parent / "Makefile").read_text()
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py")}
    unused = []
    for path in sources:
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.name == "__init__":
            continue
        dotted = "ssnet_ros." + ".".join(rel.parts)
        if dotted + ":" in setup or f"-m {dotted} " in makefile:
            continue
        name = rel.name
        used = any(other != path and (f"import {name}" in text or f".{name} import" in text
                                      or f"{dotted}" in text)
                   for other, text in sources.items())
        if not used:
            unused.append(dotted)
    assert unused == []


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules a source file imports, at the top or inside a function (``from X
    import name`` counts X.name where that is a module, else X)."""
    own = module_name(path)
    package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - node.level + 1] if node.level else [])
            target = ".".join(base + (node.module.split(".") if node.module else []))
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules
                          else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    # a module's own packages are initialised before it: not an edge of a cycle
    return {m for m in found if m in modules and not own.startswith(m + ".") and m != own}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def package_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def test_no_import_cycles() -> None:
    graph = package_graph()
    assert len(graph) > 50 and "ssnet_ros.bags.evaluator" in graph["ssnet_ros.bags.distributed"]
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_cycles_and_function_level_imports() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    # eval-bag's --ray import sits inside main: it is an edge all the same
    graph = package_graph()
    assert "ssnet_ros.bags.distributed" in graph["ssnet_ros.bags.evaluate"]
    assert "ssnet_ros.core.options" in graph["ssnet_ros.bags.evaluate"]


def test_bags_do_not_import_training() -> None:
    graph = package_graph()
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() if m.startswith(
        "ssnet_ros.bags.") for d in deps if d.startswith("ssnet_ros.training"))
    assert wrong == []


def test_the_node_class_is_thin_plumbing() -> None:
    """The node class holds subscriptions, parameters, batching and publishing only (the work
    is in core.camera_pipeline and ros.worker): under 250 lines, no method over 40."""
    tree = ast.parse((PACKAGE / "ros" / "node.py").read_text())
    base = next(n for n in tree.body
                if isinstance(n, ast.ClassDef) and n.name == "SegmentationBase")
    assert base.end_lineno - base.lineno + 1 < 250
    long = {f.name: f.end_lineno - f.lineno + 1 for f in base.body
            if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 > 40}
    assert not long, long
