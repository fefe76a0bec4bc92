"""The shape of the code, read from its source: no import cycles, the dictionary checked where used.

These read the code rather than run it, so they hold for every line, the ones no other test
reaches included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import flight.agent.agent  # noqa: F401 - imports every component, so Component knows its subclasses
from flight.agent.compute import ComputeSupervisor
from flight.agent.control import Controller
from flight.agent.ports import Component, WiringError, check_wiring
from flight.link.definitions import DICTIONARY, ENUMERATIONS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flight", "ground", "hil")


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# --- imports ---------------------------------------------------------------------------------------


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Modules imported anywhere in the file (functions too), except under ``if TYPE_CHECKING:``."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.extend([node.module] + [f"{node.module}.{alias.name}" for alias in node.names])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    modules = {_module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
               if "__pycache__" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {t for t in _runtime_imports(ast.parse(path.read_text())) if t in modules and t != name}
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


@pytest.mark.req("STR-001")
def test_no_import_cycle_in_flight_ground_or_hil():
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 100  # it really read the tree
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")  # inside a function: still a cycle
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b"]]


# --- events --------------------------------------------------------------------------------------

EMITTERS = {"_emit", "emit", "event"}  # the event ports' names: components, the worker
# Files whose events belong to a component they are not inside: the worker's are relayed by the
# compute supervisor, the control core's are emitted by the controller.
OWNER_BY_FILE = {"flight/compute/worker.py": ComputeSupervisor, "flight/agent/control_core.py": Controller}


def _names(node: ast.AST) -> list[str] | None:
    """The event names an argument can be: a string, or a conditional between strings; None if dynamic."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        a, b = _names(node.body), _names(node.orelse)
        return a + b if a is not None and b is not None else None
    return None


def emissions() -> list[tuple[str, int, str, set[str] | None, str | None]]:
    """(file, line, event name, keyword names or None when splatted, enclosing class) for each emission."""
    found = []
    for path in _sources("flight"):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        for cls_node in [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))]:
            owner = cls_node.name if isinstance(cls_node, ast.ClassDef) else None
            body = cls_node.body
            for node in (n for stmt in body if not isinstance(stmt, ast.ClassDef) for n in ast.walk(stmt)):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                is_port = isinstance(func, ast.Attribute) and func.attr in EMITTERS
                is_core = isinstance(func, ast.Name) and func.id == "Emit"
                if not (is_port or is_core):
                    continue
                names = _names(node.args[0])
                if names is None:
                    continue  # relayed or looked up: checked where it is built (EventPort)
                if is_core:
                    arg = node.args[1] if len(node.args) > 1 else None
                    keys = ({k.value for k in arg.keys if isinstance(k, ast.Constant)}
                            if isinstance(arg, ast.Dict) and None not in arg.keys else None)
                else:
                    keys = None if any(k.arg is None for k in node.keywords) else {k.arg for k in node.keywords}
                for name in names:
                    found.append((rel, node.lineno, name, keys, owner))
    return found


@pytest.mark.req("AGT-009")
def test_every_event_emitted_in_the_code_is_in_the_dictionary_with_its_arguments():
    found = emissions()
    assert len(found) > 40  # it really found the emissions
    problems = []
    classes = {cls.__name__: cls for cls in Component.__subclasses__()}
    for rel, line, name, keys, owner in found:
        event = DICTIONARY.event_by_name.get(name)
        if event is None:
            problems.append(f"{rel}:{line}: {name} is not a dictionary event")
            continue
        if keys is not None and keys != set(event.args):
            problems.append(f"{rel}:{line}: {name} takes {sorted(event.args)}, given {sorted(keys)}")
        component = OWNER_BY_FILE.get(rel) or classes.get(owner)
        if component is None:
            problems.append(f"{rel}:{line}: {name} emitted outside a component ({owner or 'module level'})")
        elif name not in component.EVENTS:
            problems.append(f"{rel}:{line}: {name} is not in {component.__name__}.EVENTS")
    assert problems == []
    emitted = {name for _rel, _line, name, _keys, _owner in found}
    relayed = {"INTERNAL_ERROR", "ECLIPSE_PREDICTED", "SAA_PREDICTED"}  # also emitted through a variable
    assert {e.name for e in DICTIONARY.events} - emitted - relayed == set()  # no event left unused


@pytest.mark.req("AGT-009")
def test_wiring_checks_catch_what_components_get_wrong():
    class Stray(Component):
        NAME = "stray"
        COMMANDS = ("NOOP",)
        CHANNELS = ("mode", "no_such_channel")

    with pytest.raises(WiringError) as err:
        check_wiring(DICTIONARY, [Stray()])
    text = str(err.value)
    assert "stray declares ['NOOP'] but has handlers for []" in text
    assert "stray produces no_such_channel, not a dictionary channel" in text
    assert "no component handles command PING" in text and "no component produces channel uptime_s" in text
    assert "no component declares event AGENT_STARTED" in text


# --- enumerations ----------------------------------------------------------------------------------


@pytest.mark.req("AGT-009")
def test_enumerations_of_the_dictionary_are_declared_once():
    """No Enum, and no tuple of two or more names, that repeats values of a dictionary enumeration
    (all of them or some: ``("SAFE", "IDLE", "COMPUTE")`` is a copy of part of Mode)."""
    dictionary_sets = {e.__name__: frozenset(m.value for m in e) for e in ENUMERATIONS}
    problems = []
    for pkg in PACKAGES:
        for path in _sources(pkg):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "flight/link/definitions.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                values: list[str] = []
                if isinstance(node, ast.ClassDef) and any("Enum" in ast.unparse(b) for b in node.bases):
                    values = [s.value.value for s in node.body if isinstance(s, ast.Assign)
                              and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str)]
                elif isinstance(node, (ast.Tuple, ast.Set, ast.List)) and node.elts and all(
                        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                    values = [e.value for e in node.elts]
                for name, members in dictionary_sets.items():
                    if len(values) >= 2 and set(values) <= members:
                        problems.append(f"{rel}:{node.lineno}: {values} repeats values of {name}")
    assert problems == []


def test_the_enumeration_check_finds_a_partial_copy(tmp_path, monkeypatch):
    (tmp_path / "flight").mkdir()
    (tmp_path / "flight" / "x.py").write_text('COMMANDABLE = ("IDLE", "COMPUTE")\n')
    for pkg in ("ground", "hil"):
        (tmp_path / pkg).mkdir()
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # the check reads the tree under ROOT
    with pytest.raises(AssertionError, match=r"\['IDLE', 'COMPUTE'\] repeats values of Mode"):
        test_enumerations_of_the_dictionary_are_declared_once()
