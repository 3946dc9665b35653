"""Dependency direction (design/architecture.md), checked by reading the imports."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: Path) -> dict[str, set[str]]:
    out = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def test_physics_imports_only_parameters_and_grid():
    for path, names in _imports(ROOT / "proda_engine" / "physics").items():
        own = {n for n in names if n.startswith("proda_engine")}
        bad = {n for n in own if not n.startswith(("proda_engine.physics", "proda_engine.parameters",
                                                    "proda_engine.grid"))}
        assert not bad, f"{path} imports {bad}"


def test_physics_never_opens_files():
    for path in (ROOT / "proda_engine" / "physics").rglob("*.py"):
        src = path.read_text()
        for word in ("open(", "xr.open", "read_csv", "np.load(", "torch.load("):
            assert word not in src, f"{path} contains {word!r}"


def test_data_never_imports_physics():
    for path, names in _imports(ROOT / "proda_engine" / "data").items():
        assert not any(n.startswith("proda_engine.physics") for n in names), path


def test_dashboard_talks_only_to_the_api():
    for path, names in _imports(ROOT / "dashboard").items():
        own = {n for n in names if n.startswith("proda_engine")}
        assert own <= {"proda_engine.api", "proda_engine"}, f"{path} imports {own}"


def _project_imports(path: Path) -> set[str]:
    """Project modules a file imports, ``from proda_engine import plot`` counted as ``proda_engine.plot``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_products_never_import_plot():
    # products return Datasets and tables; proda_engine.plot draws them (and may import products)
    for path in (ROOT / "proda_engine" / "products").rglob("*.py"):
        bad = {n for n in _project_imports(path) if n == "proda_engine.plot" or n.startswith("proda_engine.plot.")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_matplotlib_only_in_plot():
    # one place draws: no figure code hides in products, evaluation or the data layer
    for path in (ROOT / "proda_engine").rglob("*.py"):
        if "plot" in path.relative_to(ROOT / "proda_engine").parts[:1]:
            continue
        bad = {n for n in _project_imports(path) if n.split(".")[0] == "matplotlib"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_architecture_rules_catch_a_plot_import(tmp_path):
    # the rules above must be able to fail: both spellings of the import are seen
    for src in ("from proda_engine import plot\n", "from proda_engine.plot.sensitivity import plot_curves\n",
                "import matplotlib.pyplot as plt\n"):
        f = tmp_path / "m.py"
        f.write_text(src)
        names = _project_imports(f)
        assert any(n.startswith(("proda_engine.plot", "matplotlib")) for n in names), src


# ---------------------------------------------------------------------------------------------
# No import cycles (issue 18): the module graph of proda_engine and dashboard, read statically
# ---------------------------------------------------------------------------------------------


def _module_names(base: Path, packages: tuple[str, ...]) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every .py file under ``packages``."""
    out = {}
    for top in packages:
        for path in sorted((base / top).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _import_graph(base: Path, packages: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line}, from every import statement of the file: top
    level, inside functions and under ``if TYPE_CHECKING`` alike (a function-local import that dodges a
    cycle at import time is still a cycle between the modules)."""
    mods = _module_names(base, packages)

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for mod, (path, is_pkg) in mods.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                origin = node.module or ""
                if node.level:  # relative import: climb from this module's package
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    origin = ".".join(parent + ([origin] if origin else []))
                # ``from pkg import sub`` imports the submodule when there is one, else a name of pkg
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in mods else origin for a in node.names]
            for target in targets:
                dep = known(target)
                if dep is not None and dep != mod:
                    edges.setdefault(dep, node.lineno)
        graph[mod] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, {}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _describe(graph: dict[str, dict[str, int]], cycles: list[list[str]]) -> str:
    lines = []
    for comp in cycles:
        lines.append("cycle: " + ", ".join(comp))
        lines += [f"    {a} -> {b} (line {graph[a][b]})" for a in comp for b in sorted(graph[a]) if b in comp]
    return "\n".join(lines)


def test_no_import_cycles():
    """proda_engine and dashboard import in one direction only: the front doors (api, scenario_api) stand
    on the world session, inference.pipeline on inference.batch_da, and so on."""
    graph = _import_graph(ROOT, ("proda_engine", "dashboard"))
    assert "proda_engine.api" in graph and "proda_engine.session" in graph["proda_engine.api"]
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + _describe(graph, cycles)


def test_cycle_check_finds_function_local_and_relative_cycles(tmp_path):
    """The checker itself: a cycle closed by a function-local relative import is found and named."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n    return c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a\n")  # imports into the cycle, not part of it
    graph = _import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub.b"] == {"pkg.c": 2}
    cycles = _cycles(graph)
    assert cycles == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert "pkg.sub.b -> pkg.c (line 2)" in _describe(graph, cycles)


def test_no_module_above_950_non_blank_lines():
    # issue 18: a module that outgrows this is split along its seams (data/world became a package)
    skip = {".venv", "node_modules", ".git"}
    for path in ROOT.rglob("*.py"):
        if skip & set(path.relative_to(ROOT).parts):
            continue
        n = sum(1 for line in path.read_text().splitlines() if line.strip())
        assert n <= 950, f"{path.relative_to(ROOT)} has {n} non-blank lines"
