"""Counts of the package's import graph, by the rules tests/test_layout.py checks: modules,
import edges, upward edges (against DESIGN.md's layers) and attribute reads `x._y` on objects
other than self/cls (reach-through privates). For before/after figures of a layout change:

    python tools/import_graph.py [REPO]      # REPO: a checkout (default: this one)
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

_PRIVATE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\._[a-z][A-Za-z0-9_]*")


def main(repo: Path) -> str:
    spec = importlib.util.spec_from_file_location("layout_rules", repo / "tests" / "test_layout.py")
    assert spec is not None and spec.loader is not None
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    package = repo / "python" / "lockstep"
    rules.PACKAGE = package
    modules = {rules.module_name(p): p for p in package.rglob("*.py")}
    edges = {(m, i) for m, p in modules.items() for i in rules.imports_of(p) if i != m}
    upward = [(a, b) for a, b in edges
              if a not in rules.EXEMPT and b not in rules.EXEMPT and rules.layer_of(b) > rules.layer_of(a)]
    private = sum(1 for p in package.rglob("*.py") if "_native" not in p.parts
                  for line in p.read_text().splitlines() if "import" not in line and not line.lstrip().startswith("#")
                  for m in _PRIVATE.finditer(line) if m.group(1) not in ("self", "cls", "lib", "ffi"))
    return (f"{repo}: {len(modules)} modules, {len(edges)} import edges, {len(upward)} upward, "
            f"{private} private reads on other objects (x._y)")


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]).resolve()))
