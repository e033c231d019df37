"""The package's import graph follows DESIGN.md's layers: imports only point down, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import lockstep

# The source tree when the tests run from a clone, else the installed package.
_SOURCE = Path(__file__).resolve().parents[1] / "python" / "lockstep"
PACKAGE = _SOURCE if _SOURCE.is_dir() else Path(lockstep.__file__).resolve().parent

# Lowest first. A module may import its own layer or any below, never one above.
LAYERS = [
    ["lockstep.errors", "lockstep._closing"],
    ["lockstep._native", "lockstep.codec"],  # codec's flyweight readers and encoders are C (codec_fast.c)
    ["lockstep.transport"],
    ["lockstep.aeron"],
    ["lockstep.cluster"],
    ["lockstep.archive"],
    ["lockstep.bench", "lockstep.demo", "lockstep.examples"],
    ["lockstep.cli"],
]
EXEMPT = {"lockstep", "lockstep.__main__", "lockstep.cli.__main__"}  # the facade re-exports every layer


def module_name(path: Path) -> str:
    parts = ["lockstep", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{name} belongs to no layer of DESIGN.md: add it to LAYERS or move it")


def imports_of(path: Path) -> set[str]:
    """Every lockstep module the file imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lockstep")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lockstep":
                continue
            for alias in node.names:  # `from . import codec` imports a module, not the package
                sub = f"{target}.{alias.name}"
                rel = Path(*sub.split(".")[1:])
                is_module = (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()
                found.add(sub if is_module else target)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_belongs_to_a_layer() -> None:
    for name in graph():
        if name not in EXEMPT:
            layer_of(name)


def test_imports_only_point_down() -> None:
    upward = [
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, targets in sorted(graph().items()) if src not in EXEMPT
        for dst in sorted(targets) if dst not in EXEMPT and layer_of(dst) > layer_of(src)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    edges = {src: {d for d in dsts if d not in EXEMPT and d != src} for src, dsts in graph().items()
             if src not in EXEMPT}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt in edges and not state.get(nxt):
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node)
