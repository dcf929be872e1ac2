"""The layering of design.md, enforced: imports point one way, and protocol/ does no I/O.

errors <- protocol <- storage <- net <- cli. The protocol core never touches a
socket, a file, a database, the terminal, the clock or a random source: time
and random bytes are passed in, so its behaviour is a pure function of its
inputs and every test can pin them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "p2ptransfer"

LAYERS = {"protocol": 1, "storage": 2, "net": 3, "cli": 4}
# Standard-library and third-party modules the pure core must not import.
IMPURE = {
    "asyncio",
    "websockets",
    "sqlite3",
    "click",
    "rich",
    "socket",
    "ssl",
    "secrets",
    "random",
    "time",
    "datetime",
    "os",
    "subprocess",
    "threading",
    "logging",
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


# Top-level modules: demo.py is an application of the net layer (the library behind
# ``p2ptransfer demo``); __main__ only starts the CLI.
# clock.py reads the wall clock: it sits with storage, out of the pure core's reach.
TOP_LEVEL = {"__init__.py": 0, "errors.py": 0, "clock.py": 2, "demo.py": 3, "__main__.py": 5}


def _layer(path: Path) -> int:
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return TOP_LEVEL[parts[0]]
    return LAYERS[parts[0]]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["p2ptransfer", *path.relative_to(PACKAGE).parent.parts]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def _target_layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "p2ptransfer" or len(parts) < 2:
        return None
    if parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return TOP_LEVEL.get(f"{parts[1]}.py", 0)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path: Path) -> None:
    own = _layer(path)
    for module, line in _imports(path):
        target = _target_layer(module)
        if target is None:
            continue
        assert target <= own, f"{path.relative_to(PACKAGE)}:{line} imports {module}, a higher layer"


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "protocol").glob("*.py")),
    ids=lambda p: p.name,
)
def test_protocol_core_is_sans_io(path: Path) -> None:
    for module, line in _imports(path):
        top = module.split(".")[0]
        assert top not in IMPURE, f"protocol/{path.name}:{line} imports {module}"


def test_every_module_uses_postponed_annotations() -> None:
    missing = [
        str(p.relative_to(PACKAGE))
        for p in _modules()
        if p.stat().st_size and "from __future__ import annotations" not in p.read_text()
    ]
    assert missing == []


@pytest.mark.parametrize(
    "path",
    sorted((PACKAGE / "net").rglob("*.py")),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_net_imports_neither_click_nor_rich(path: Path) -> None:
    """The network layer is a library: commands and their rendering live in cli/."""
    for module, line in _imports(path):
        top = module.split(".")[0]
        assert top not in ("click", "rich"), f"{path.relative_to(PACKAGE)}:{line} imports {module}"


def _module_name(path: Path) -> str:
    parts = ["p2ptransfer", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from . import x`` names module x)."""
    modules = {_module_name(path): path for path in _modules()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, node.module] if node.module else base)
                for candidate in (module, *(f"{module}.{a.name}" for a in node.names)):
                    if candidate in modules and candidate != name:
                        targets.add(candidate)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
        graph[name] = targets
    return graph


def test_no_import_cycles() -> None:
    """Not even under TYPE_CHECKING: a picture of the modules has no circle."""
    graph = _module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
