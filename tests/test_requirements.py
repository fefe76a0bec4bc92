"""docs/requirements.md and the tests that verify it hold each other to account."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "docs" / "requirements.md"
_ROW = re.compile(r"^\| ([A-Z]{3}-\d{3}) \| (.+?) \| ([TAID](?:, [TAID])*) \|$")


def requirements() -> dict[str, str]:
    """ID -> method, from the tables of docs/requirements.md."""
    found: dict[str, str] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        m = _ROW.match(line)
        if m:
            assert m.group(1) not in found, f"{m.group(1)} is listed twice"
            found[m.group(1)] = m.group(3)
    return found


def markers() -> dict[str, list[str]]:
    """Requirement ID -> the tests that name it (read from the source, whatever a run selects)."""
    named: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "pytest.mark.req":
                where = f"{path.name}:{node.lineno}"
                for arg in node.args:
                    assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), f"{where}: IDs are strings"
                    named.setdefault(arg.value, []).append(where)
    return named


def test_every_requirement_has_a_verifying_test_and_every_marker_a_requirement():
    listed = requirements()
    named = markers()
    assert len(listed) >= 40  # the tables were read
    assert sorted(set(named) - set(listed)) == [], "markers naming IDs that docs/requirements.md lacks"
    assert sorted(set(listed) - set(named)) == [], "requirements no test verifies"


def test_every_requirement_row_is_read():
    """The reader itself: a requirement line that does not parse would silently shrink the list."""
    rows = [line for line in REQUIREMENTS.read_text().splitlines() if re.match(r"^\| [A-Z]{3}-\d", line)]
    assert len(rows) == len(requirements())
