"""How ``isthmus reload`` prints the gateway's answer (its exit code and what it says)."""

from __future__ import annotations

import pytest

from gateway.commands.reload import _report


def test_an_applied_reload_with_a_problem_says_so_and_still_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = {
        "result": "applied",
        "version": "3f69053d4b90",
        "changes": ["sources"],
        "problems": [{"path": "site.workers", "message": "worker(s) 1 did not confirm"}],
    }
    assert _report(doc) == 0
    out, err = capsys.readouterr()
    assert out == "applied version 3f69053d4b90 (sources)\n"
    assert err == "applied, but site.workers: worker(s) 1 did not confirm\n"


def test_an_applied_reload_without_problems_prints_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _report({"result": "applied", "version": "v", "changes": [], "problems": []}) == 0
    assert capsys.readouterr() == ("applied version v ()\n", "")
