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


def test_no_module_above_950_non_blank_lines():
    # issue 18: a module that outgrows this is split along its seams (data/world became a package)
    skip = {".venv", "node_modules", ".git"}
    for path in ROOT.rglob("*.py"):
        if skip & set(path.relative_to(ROOT).parts):
            continue
        n = sum(1 for line in path.read_text().splitlines() if line.strip())
        assert n <= 950, f"{path.relative_to(ROOT)} has {n} non-blank lines"
