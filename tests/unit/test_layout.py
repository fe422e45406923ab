"""The package's shape: no two modules import each other, directly or through a cycle (lazy
imports inside functions count too), and the stages keep to their places."""
from __future__ import annotations

import ast
import pathlib

import pytest

import hftcap

PKG = pathlib.Path(hftcap.__file__).resolve().parent
SRC = pathlib.Path(__file__).resolve().parents[2] / "hftcap"


def _root() -> pathlib.Path:
    # Prefer the checkout's sources (what a change edits); the installed copy is the same tree.
    return SRC if (SRC / "__init__.py").exists() else PKG


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = ["hftcap", *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Every hftcap module `name` imports, anywhere in the file, resolved to a module we have."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()

    def add(target: str) -> None:
        # `from a.b import c` is module a.b.c when that exists, else a.b.
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name and target != "hftcap":
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hftcap"):
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("hftcap"):
                continue
            for a in node.names:
                add(f"{mod}.{a.name}")
    return out


def graph(root: pathlib.Path) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    g = graph(_root())
    assert len(g) > 20, f"found only {len(g)} modules under {_root()}"
    found = cycles(g)
    assert not found, "modules that import each other (directly or through a cycle): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_cycle_finder_finds_a_cycle(tmp_path):
    """The check itself: a planted two-module circle and a three-module one are both found."""
    pkg = tmp_path / "hftcap"
    (pkg / "x").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "x" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .x import b\n")
    (pkg / "x" / "b.py").write_text("def f():\n    from ..a import thing\n")
    (pkg / "c.py").write_text("import hftcap.d\n")
    (pkg / "d.py").write_text("from hftcap import e\n")
    (pkg / "e.py").write_text("from . import c\n")
    (pkg / "leaf.py").write_text("from . import a\n")
    found = cycles(graph(pkg))
    assert sorted(found) == [["hftcap.a", "hftcap.x.b"], ["hftcap.c", "hftcap.d", "hftcap.e"]]


# Each stage's package; the top level holds only the entry points and the composition.
TOP_LEVEL = {"__init__", "__main__", "entry", "cli", "errors", "session", "listen", "demo"}
STAGES = {"receive", "feed", "book", "measure", "view", "lab", "ops"}


def test_stages_are_subpackages():
    root = _root()
    top = {p.stem for p in root.glob("*.py")}
    assert top == TOP_LEVEL, f"top-level modules outside the stages: {sorted(top - TOP_LEVEL)}"
    subs = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert STAGES <= subs, f"missing stage packages: {sorted(STAGES - subs)}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_do_not_reach_up(stage):
    """A stage never imports the command line, the session or the listener that compose it."""
    g = graph(_root())
    up = {"hftcap.cli", "hftcap.session", "hftcap.listen", "hftcap.demo"}
    bad = {m: sorted(d & up) for m, d in g.items() if m.startswith(f"hftcap.{stage}") and d & up}
    assert bad == {}


def test_no_test_doubles_in_the_package():
    names = {p.stem for p in _root().rglob("*.py")}
    assert not {n for n in names if "fake" in n or "mock" in n or "stub" in n}
