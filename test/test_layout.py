"""The architecture the layout promises: admn_core never imports ROS code, no two modules import each other (directly
or round a circle, lazy imports included), and loading a model needs no training code."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("admn_core", "admn_ros")
ROS_MODULES = ("admn_ros", "rclpy", "message_filters", "launch", "launch_ros", "sensor_msgs", "std_msgs",
               "geometry_msgs", "diagnostic_msgs", "rosgraph_msgs", "builtin_interfaces", "vision_msgs")


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imported_names(path: Path) -> set[str]:
    """Every absolute import in the file, at any depth (function-level imports count: they are still dependencies)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # A module importing its own package's __init__ is Python's normal package loading, not a dependency edge.
        graph[name] = {dep for dep in _imported_names(path)
                       if dep in modules and dep != name and not name.startswith(dep + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_admn_core_imports_no_ros_code():
    offending = {name: sorted(dep for dep in _imported_names(path) if dep.split(".")[0] in ROS_MODULES)
                 for name, path in _modules().items() if name.startswith("admn_core")}
    assert {name: deps for name, deps in offending.items() if deps} == {}


def test_no_import_circles():
    assert _cycles(_import_graph()) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_loading_a_model_imports_no_training_code():
    code = ("import sys, admn_core.bundle, admn_core.runtime; "
            "print(sorted(m for m in sys.modules if m.startswith(('admn_core.train', 'admn_core.eval', 'admn_ros'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]"
