"""The house from the source alone: the import graph of d2lkaggle/ (read with ``ast``, nothing
is imported) has no circle and no arrow back up, the core imports no framework, the wings
mirror each other, and docs/architecture.md's tree is the package's files.

``python tests/house/test_imports.py`` prints each module's floor and what it imports.
"""
from __future__ import annotations

import ast
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(ROOT, "d2lkaggle")

#: the rooms from the ground floor up; a module may import its own room and the ones below
FLOORS = ["utils", "parallel", "data", "train", "models", "specs", "common", "wings", "compete",
          "cli"]
WINGS = ("torch_impl", "mxnet_impl", "paddle_impl")
FRAMEWORKS = ("torch", "torchvision", "mxnet", "paddle")


def modules() -> dict[str, str]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for d, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def _statements(tree: ast.AST):
    """Every import statement, at any depth, but those under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    return [n for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skip]


def imports(name: str, path: str, mods: dict[str, str]) -> tuple[set[str], set[str]]:
    """(modules of the package ``name`` imports, top-level names of outside packages)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    inside, outside = set(), set()
    for node in _statements(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
            # `from .mod import x`: x may be a submodule of mod, or a name in it
            targets = [mod + "." + a.name for a in node.names] + ([mod] if node.module else [])
        else:
            targets = [node.module] + [node.module + "." + a.name for a in node.names]
        for t in targets:
            if not t.startswith("d2lkaggle"):
                outside.add(t.split(".")[0])
                continue
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                inside.add(t)
    return inside, outside


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    mods = modules()
    inside, outside = {}, {}
    for m, p in mods.items():
        inside[m], outside[m] = imports(m, p, mods)
    return inside, outside


def room(name: str) -> str:
    """The room of a module: its subpackage, ``wings`` for the three backends, or the top."""
    parts = name.split(".")
    if len(parts) == 1 or (len(parts) == 2 and not os.path.isdir(os.path.join(PKG, parts[1]))):
        return "top"
    return "wings" if parts[1] in WINGS else parts[1]


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    inside, _ = graph()
    assert circles(inside) == []


def test_circles_are_found():
    # the test can fail: a two-module circle and a three-module one are both reported
    g = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(circles(g)) == [["a", "b"], ["c", "d", "e"]]


def test_every_arrow_points_down_or_within_its_room():
    inside, _ = graph()
    up = []
    for m, deps in inside.items():
        r = room(m)
        if r == "top":
            continue
        for d in deps:
            rd = room(d)
            if rd == "top":   # the package face: only the CLI reads it (the version)
                ok = r == "cli"
            elif r == "wings" and rd == "wings":
                ok = m.split(".")[1] == d.split(".")[1]   # a wing never imports another
            else:
                ok = FLOORS.index(rd) <= FLOORS.index(r)
            if not ok:
                up.append(f"{m} ({r}) -> {d} ({rd})")
    assert up == []


def test_rooms_are_the_documented_floors():
    inside, _ = graph()
    rooms = {room(m) for m in inside} - {"top"}
    assert rooms == set(FLOORS)
    top = sorted(m for m in inside if room(m) == "top" and m != "d2lkaggle")
    assert len(top) <= 10, top
    sizes = {r: sum(1 for m in inside if room(m) == r and not m.endswith(r)) for r in rooms}
    assert max(v for r, v in sizes.items() if r != "wings") <= 12, sizes


def test_the_core_imports_no_framework_even_lazily():
    _, outside = graph()
    hits = {m: sorted(o & set(FRAMEWORKS)) for m, o in outside.items()
            if room(m) != "wings" and o & set(FRAMEWORKS)}
    assert hits == {}


def test_the_wings_hold_the_same_files():
    files = {w: sorted(f for f in os.listdir(os.path.join(PKG, w)) if f.endswith(".py"))
             for w in WINGS}
    assert files["torch_impl"] == files["mxnet_impl"] == files["paddle_impl"]
    assert "device.py" in files["torch_impl"]


def test_import_d2lkaggle_loads_no_framework():
    import subprocess
    code = ("import sys, d2lkaggle, d2lkaggle.cli, d2lkaggle.compete.run, d2lkaggle.compete.members; "
            "print(sorted(m for m in ('torch', 'mxnet', 'paddle') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _doc_tree() -> set[str]:
    """The .py files docs/architecture.md's tree names (paths relative to d2lkaggle/): one
    entry per line, two spaces per level; a folder described as "the same files as X/" holds
    X's files."""
    text = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    block = text.split("```text\n", 1)[1].split("```", 1)[0]
    files: dict[str, list[str]] = {"": []}
    folder = ""
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+)(.*)$", line)
        if not m or len(m.group(1)) == 0:
            continue
        depth, entry, rest = len(m.group(1)) // 2, m.group(2), m.group(3)
        if entry.endswith("/") and depth == 1:
            folder = entry
            same = re.search(r"the same files as (\w+/)", rest)
            files[folder] = list(files[same.group(1)]) if same else []
        elif entry.endswith(".py"):
            files["" if depth == 1 else folder].append(entry)
    return {f + name for f, names in files.items() for name in names}


def test_the_architecture_tree_is_the_package():
    on_disk = {os.path.relpath(p, PKG).replace(os.sep, "/") for p in modules().values()}
    assert _doc_tree() == on_disk


if __name__ == "__main__":
    inside, outside = graph()
    for m in sorted(inside, key=lambda m: (FLOORS.index(room(m)) if room(m) in FLOORS else -1, m)):
        print(f"{room(m):8s} {m:40s} -> {', '.join(sorted(inside[m])) or '-'}")
