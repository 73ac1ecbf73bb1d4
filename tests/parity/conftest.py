"""One parity run per session: every test module here names its comparisons in a
module-level ``PARITY_CASES = {name: run_parity keywords}``; the ``parity_reports`` fixture
runs all cases of the selected modules together — ONE process per backend (a framework
import costs seconds; a process per case and task was most of this folder's time) — and
maps each name to its report. Names are unique across modules."""
from __future__ import annotations

import pytest

from d2lkaggle.parity import run_cases
from d2lkaggle.registry import is_installed

INSTALLED = [b for b in ("torch", "mxnet", "paddle") if is_installed(b)]


@pytest.fixture(scope="session")
def parity_reports(request, tmp_path_factory) -> dict[str, dict]:
    if len(INSTALLED) < 2:
        pytest.skip(f"parity needs two installed backends, found {INSTALLED}")
    cases: dict[str, dict] = {}
    for module in {item.module for item in request.session.items if getattr(item, "module", None)}:
        for name, case in getattr(module, "PARITY_CASES", {}).items():
            if cases.setdefault(name, case) != case:
                raise ValueError(f"parity case {name!r} is defined twice with different settings")
    return run_cases(cases, workdir=str(tmp_path_factory.mktemp("parity")))
