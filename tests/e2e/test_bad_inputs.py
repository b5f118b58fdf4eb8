"""Issue 14's bad-input corpus in CI: every case of ``tests/e2e/bad_inputs.py`` (hostile and
broken files, dataset layouts, command-line values, model folders, project files) must end with
the expected sentence and exit code, no traceback, nothing written outside the chosen folder,
the good data beside the bad kept, and no hang."""

from __future__ import annotations

import pytest

from tests.e2e.bad_inputs import CASES, run_case


def test_corpus_is_large_and_covers_every_area():
    areas = {c.area for c in CASES}
    assert len(CASES) >= 100
    assert {"reader", "dataset", "names", "project", "cli", "model", "subprocess"} <= areas
    assert len({c.id for c in CASES}) == len(CASES)  # ids are unique


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert outcome.kind == "clean", (
        f"{outcome.kind}: {outcome.detail}\n--- stderr ---\n{outcome.err[-2000:]}"
    )
