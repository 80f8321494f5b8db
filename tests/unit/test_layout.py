"""The package's layout holds (docs/layout.md): no import circle between ``extraction`` modules, no
module over 450 lines, no streamlit anywhere in ``extraction/``, and a top level of at most a dozen
modules beside the subpackages.

The checks read the source with :mod:`ast` (nothing is imported), from a root passed in, so each is
also tried on a small planted tree in a temporary folder: a check that cannot fail proves nothing.

An import edge is a module-level import of another ``extraction`` module: ``from .x import y``,
``from . import x`` (an edge to the submodule ``x`` when it is one, else to the package), ``import
extraction.x``. Imports inside a function run on the first call, not at import time, and those under
``if TYPE_CHECKING:`` never run, so neither makes an edge; a class body runs at import time, so its
imports count.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "extraction"
MAX_LINES = 450
MAX_TOP_LEVEL_MODULES = 12


def _module_name(path: Path, root: Path) -> str:
    """``root/extraction/audit/run.py`` -> ``extraction.audit.run``; an ``__init__.py`` names its package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of ``root/package`` by dotted name (``__pycache__`` left out)."""
    return {
        _module_name(path, root): path
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]):
    """The statements of ``body`` that run when the module is imported: into ``if``/``try``/``with``
    and class bodies, not into functions, not into ``if TYPE_CHECKING:`` (its ``else`` does run)."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, (ast.Try, ast.TryStar)):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_statements(block)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            yield from _import_time_statements(node.body)


def _imported(node: ast.stmt, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``known`` modules one import statement of ``module`` loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        # The package a relative import starts from: the module's own package, one level up per extra dot.
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    targets = set()
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in known:
            targets.add(submodule)
        elif source in known:
            targets.add(source)
    return targets


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``root/package`` -> the package's modules it imports at import time."""
    modules = package_modules(root, package)
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _import_time_statements(tree.body):
            edges |= _imported(node, name, is_package, known)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None when the graph has none (depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]  # pending[i]: the edges of path[i] not yet followed
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                done.add(path.pop())
                pending.pop()
            elif nxt in path:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                pending.append(iter(sorted(graph.get(nxt, ()))))
    return None


def long_modules(root: Path, limit: int = MAX_LINES, package: str = PACKAGE) -> dict[str, int]:
    """The modules of ``root/package`` over ``limit`` lines, with their line counts."""
    modules = package_modules(root, package)
    counts = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules.items()}
    return {name: n for name, n in counts.items() if n > limit}


def streamlit_importers(root: Path, package: str = PACKAGE) -> list[str]:
    """The modules of ``root/package`` that import streamlit anywhere (a function-local import too)."""
    found = []
    for name, path in package_modules(root, package).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                found.append(name)
                break
    return found


def top_level_modules(root: Path, package: str = PACKAGE) -> list[str]:
    """The plain modules at the top of ``root/package``, besides ``__init__`` and ``__main__``."""
    return sorted(p.stem for p in (root / package).glob("*.py") if p.stem not in {"__init__", "__main__"})


# The package itself.


def test_extraction_has_no_import_cycle():
    cycle = find_cycle(import_graph(ROOT))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_of_extraction_is_over_450_lines():
    assert long_modules(ROOT) == {}


def test_extraction_imports_no_streamlit():
    assert streamlit_importers(ROOT) == []


def test_extraction_top_level_holds_at_most_a_dozen_modules():
    modules = top_level_modules(ROOT)
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_the_graph_sees_the_package_edges_it_should():
    # The reader sees real edges (a graph with none would pass the cycle test whatever the code did).
    graph = import_graph(ROOT)
    assert "extraction.comparison.compare" in graph["extraction"]
    assert "extraction.strategies" in graph["extraction.extract"]


# The same checks on planted trees.


def _plant(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_a_planted_cycle_through_a_subpackage_is_found_and_named(tmp_path):
    root = _plant(
        tmp_path,
        {
            "extraction/__init__.py": "from .a import f\n",
            "extraction/a.py": "from .sub.b import g\n\ndef f():\n    return g()\n",
            "extraction/sub/__init__.py": "",
            "extraction/sub/b.py": "from .. import c\n\ndef g():\n    return c.h()\n",
            "extraction/c.py": "import extraction.a\n\ndef h():\n    return 1\n",
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle == ["extraction.a", "extraction.sub.b", "extraction.c", "extraction.a"]


def test_function_local_and_type_checking_imports_make_no_edge(tmp_path):
    root = _plant(
        tmp_path,
        {
            "extraction/__init__.py": "",
            "extraction/a.py": "from .b import g\n",
            "extraction/b.py": (
                "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .a import X\n\n"
                "def g():\n    from .a import f\n    return f\n"
            ),
        },
    )
    graph = import_graph(root)
    assert graph["extraction.b"] == set()
    assert find_cycle(graph) is None
    # The same import at module level is a circle.
    (root / "extraction/b.py").write_text("from .a import f\n", encoding="utf-8")
    assert find_cycle(import_graph(root)) == ["extraction.a", "extraction.b", "extraction.a"]


def test_a_relative_import_from_a_package_init_resolves_inside_it(tmp_path):
    root = _plant(
        tmp_path,
        {
            "extraction/__init__.py": "",
            "extraction/sub/__init__.py": "from .run import go\nfrom ..top import name\n",
            "extraction/sub/run.py": "from . import helper\n",
            "extraction/sub/helper.py": "",
            "extraction/top.py": "name = 1\n",
        },
    )
    graph = import_graph(root)
    assert graph["extraction.sub"] == {"extraction.sub.run", "extraction.top"}
    assert graph["extraction.sub.run"] == {"extraction.sub.helper"}


def test_a_long_module_streamlit_and_a_crowded_top_level_are_found(tmp_path):
    root = _plant(
        tmp_path,
        {
            "extraction/__init__.py": "",
            "extraction/long.py": "x = 1\n" * 451,
            "extraction/ok.py": "x = 1\n" * 450,
            "extraction/views/page.py": "def draw():\n    import streamlit as st\n    st.write(1)\n",
            "extraction/views/sub.py": "from streamlit.runtime import exists\n",
            **{f"extraction/m{i}.py": "" for i in range(11)},
        },
    )
    assert long_modules(root) == {"extraction.long": 451}
    assert streamlit_importers(root) == ["extraction.views.page", "extraction.views.sub"]
    assert len(top_level_modules(root)) == 13 > MAX_TOP_LEVEL_MODULES
