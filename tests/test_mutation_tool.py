"""benchmarks/mutation.py (issue 27): on a toy package it plants each mutation, counts a mutant
that the tests catch as killed and one they cannot see as survived, and never edits the
module it mutates."""

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).parents[1] / "benchmarks" / "mutation.py"


def test_killed_and_survived_are_told_apart(tmp_path):
    src = tmp_path / "src" / "toy"
    src.mkdir(parents=True)
    module = src / "maths.py"
    source = "def area(w, h):\n    return w * h\n\n\ndef unused(a):\n    return a + 1\n"
    module.write_text(source)
    (src / "__init__.py").write_text("")
    test = tmp_path / "test_toy.py"
    body = "from toy.maths import area\n\n\ndef test_area():\n    assert area(2, 3) == 6\n"
    test.write_text(body)
    out = tmp_path / "report.json"
    command = [sys.executable, str(TOOL), "--module", str(module), "--functions", "area,unused",
               "--tests", str(test), "--timeout", "120", "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path, timeout=600)
    report = json.loads(out.read_text())
    by_change = {(m["function"], m["change"]): m["killed"] for m in report["mutants"]}
    # area: w * h -> w / h is caught; unused: a + 1 -> a - 1 and 1 -> 2 are not tested at all.
    assert by_change == {
        ("area", "Mult -> Div"): True,
        ("unused", "Add -> Sub"): False,
        ("unused", "1 -> 2"): False,
    }
    assert report["killed"] == 1 and report["sites"] == 3
    assert module.read_text() == source  # the working tree is untouched
    assert "**survived**" in out.with_suffix(".md").read_text()
