"""docs/architecture.md's "How to add ..." names every table a new model, optimizer, schedule
or competition must join: each literal table of the core (a dict's keys, a tuple, list or set)
that lists two or more of today's members of a kind is a place the next one must be added
too, so its file and its name must be in that kind's entry of the page."""
from __future__ import annotations

import ast
import os
import re

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "d2lkaggle")
#: the kinds a newcomer adds, and the words of their entry in the page
KINDS = {"model": "a model", "optimizer": "an optimizer", "schedule": "a schedule",
         "competition": "a competition"}


def members() -> dict[str, set[str]]:
    from d2lkaggle.models.table import MODEL_NAMES
    from d2lkaggle.specs.competitions import COMPETITIONS
    from d2lkaggle.train.optim import OPTIMIZERS
    from d2lkaggle.train.schedules import SCHEDULES
    return {"model": set(MODEL_NAMES), "optimizer": set(OPTIMIZERS), "schedule": set(SCHEDULES),
            "competition": set(COMPETITIONS)}


def tables() -> set[tuple[str, str, str]]:
    """``(kind, file under d2lkaggle/, name)`` of every literal table in the core (the wings
    excluded: their builders are named by rule) listing two or more members of a kind; the
    name is the module-level variable it is assigned to, or the function it stands in."""
    kinds, found = members(), set()

    def visit(node: ast.AST, owner: str | None, path: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = owner
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = child.name
            elif isinstance(child, (ast.Assign, ast.AnnAssign)) and owner is None:
                target = child.targets[0] if isinstance(child, ast.Assign) else child.target
                name = getattr(target, "id", None)
            if isinstance(child, (ast.Dict, ast.Tuple, ast.List, ast.Set)):
                items = child.keys if isinstance(child, ast.Dict) else child.elts
                words = {i.value for i in items if isinstance(i, ast.Constant)
                         and isinstance(i.value, str)}
                for kind, names in kinds.items():
                    if len(words & names) >= 2:
                        found.add((kind, path, name or "?"))
            visit(child, name, path)

    for folder, _, files in os.walk(PACKAGE):
        rel = os.path.relpath(folder, PACKAGE)
        if rel.split(os.sep)[0].endswith("_impl"):
            continue
        for f in files:
            if f.endswith(".py"):
                path = os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/")
                with open(os.path.join(folder, f), encoding="utf-8") as fh:
                    visit(ast.parse(fh.read()), None, path)
    return found


def entries() -> dict[str, str]:
    """Each kind's entry of the page's "How to add ..." section."""
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## How to add ...", 1)[1].split("\n## ", 1)[0]
    out = {}
    for kind, words in KINDS.items():
        m = re.search(rf"^- \*\*{words}\*\*(.*?)(?=^- \*\*|\Z)", section, re.M | re.S)
        assert m, f"no entry '- **{words}**' in docs/architecture.md's How to add"
        out[kind] = " ".join(m.group(1).split())
    return out


def test_every_table_a_newcomer_must_join_is_named_in_how_to_add():
    found, text = tables(), entries()
    # the scan sees the tables it must see (it would pass vacuously on nothing)
    assert {("model", "models/table.py", "HEADS"), ("schedule", "cli/args.py", "SCHEDULE_FIELDS"),
            ("schedule", "train/__init__.py", "EXPORTS"),
            ("competition", "specs/competitions.py", "BOOK_RECIPES"),
            ("optimizer", "train/optim.py", "OPTIMIZERS")} <= found, sorted(found)
    missing = sorted(f"{kind}: {path} {name}" for kind, path, name in found
                     if f"`{path}`" not in text[kind] or name not in text[kind])
    assert not missing, ("docs/architecture.md's How to add does not name these tables (file "
                         "and name, in the entry of their kind): " + "; ".join(missing))


def test_no_table_of_the_core_hard_codes_a_count_per_competition():
    """The class counts the chapters' get_net needs are the competitions' own field now."""
    from d2lkaggle.specs.competitions import COMPETITIONS
    assert all(isinstance(c.num_classes, int) for c in COMPETITIONS.values())
    assert not [t for t in tables() if t[1] == "common/book.py"]
