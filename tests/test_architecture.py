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
