"""The package's folders are its layers: every import points down or stays
in its folder, and no modules import each other in a cycle. Read from the
source, so a new import that runs back up fails here, not in a review."""
import ast
import os

import pytest

TOP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "daxfuse")
# lowest first; a module may import from its own layer and those before it
LAYERS = ["core", "memory", "dax", "cxl", "views", "client", "daemon", "front"]


def modules() -> dict[str, str]:
    """Each module's dotted name (daxfuse.x.y), to its path."""
    found = {}
    for root, dirs, files in os.walk(TOP):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(TOP))[:-3].split(os.sep)
                found[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(root, f)
    return found


MODULES = modules()


def layer(module: str) -> int:
    folder = module.split(".")[1] if module.count(".") else "front"
    return LAYERS.index(folder if folder in LAYERS else "front")


def imports(module: str) -> set[str]:
    """The daxfuse modules module imports (a package's submodules named in
    `from package import sub` count as the submodule)."""
    path = MODULES[module]
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                if target in MODULES:
                    out.add(target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
    return out - {module}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    up = sorted(m for m in imports(module) if layer(m) > layer(module))
    assert not up, f"{module} ({LAYERS[layer(module)]}) imports a layer above it: {up}"


def test_no_cycles():
    graph = {m: imports(m) for m in MODULES}
    # a package's __init__ importing its own submodules is how it exports them
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]) if t in path
                            else f"import cycle through {t}")
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_every_module_has_a_layer():
    """A new top-level module is a front end only if it says so here."""
    front = sorted(m for m in MODULES if layer(m) == LAYERS.index("front"))
    assert front == ["daxfuse", "daxfuse.__main__", "daxfuse.cli", "daxfuse.testing"]


def test_tests_and_scripts_use_no_private_name():
    """Tests and scripts hold the package to its public names, so that a
    refactoring inside a module cannot break them unseen."""
    root = os.path.dirname(TOP)
    found = []
    for folder in ("tests", "scripts"):
        for f in sorted(os.listdir(os.path.join(root, folder))):
            if not f.endswith(".py"):
                continue
            for node in ast.walk(ast.parse(open(os.path.join(root, folder, f)).read())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("daxfuse"):
                    found += [f"{folder}/{f}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not found
