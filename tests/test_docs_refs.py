"""Every model-section citation resolves inside the repository (docs/model.md).

The code cites the model description as "spec §(j)", "spec section (m)", "spec section l", "Spec sections
(i), (j) and (n)", "spec (g)" (in strings) or a bare "§(k)". Each label must have a heading
``## (j) ...`` in docs/model.md, and every module, function or class that docs/model.md names under
**Implemented in:** or **Tested in:** must exist. The parameter and grid tables in docs/model.md are
static Markdown; they are checked against the code's tables.

Names are found by reading the source (ast), following re-exports (``from x import y`` and
``from x import *``) to the module that defines them; only a name that the source cannot settle
(e.g. a module ``__getattr__``) is imported for real.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_DOC = ROOT / "docs" / "model.md"
#: Files scanned for citations (text formats the project writes prose in).
SCANNED_SUFFIXES = (".py", ".md", ".yaml", ".yml")
#: Top-level Python packages whose names docs/model.md may cite as dotted paths.
PACKAGES = ("proda_engine", "dashboard", "benchmarks", "scripts")

# A list after the first label: "spec sections (i), (j), (m) and (n)".
_TAIL = r"((?:\s*,\s*(?:and\s+)?\(\s*[a-z]\s*\)|\s+and\s+\(\s*[a-z]\s*\))*)"
#: The spellings used for a model-section citation. Group 1 is the first label, group 2 a list tail.
CITATION_PATTERNS = (
    # "§(j)", "§ (j)", "spec §(j)", "clm5-matrix-spec.md §(b)"; a digit after § is another document's section.
    re.compile(r"§\s*\(([a-z])\)"),
    # "spec section (m)", "Spec sections (i), (j) and (n)", "spec section l" (a lone letter, word-bounded).
    re.compile(r"\b[Ss]pec(?:ification)?\s+sections?\s+(?:\(([a-z])\)|([a-z])(?![A-Za-z0-9]))" + _TAIL),
    # "spec (g)" (strings and help texts that avoid the § sign).
    re.compile(r"\b[Ss]pec\s+\(([a-z])\)" + _TAIL),
)
HEADING = re.compile(r"^##\s+\(([a-z])\)\s+\S", re.MULTILINE)
REF_PARAGRAPH = re.compile(r"^\*\*(?:Implemented in|Tested in):\*\*(.*?)(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)
BACKTICK = re.compile(r"`([^`\n]+)`")


# --------------------------------------------------------------------------------------------------
# Scanning for citations
# --------------------------------------------------------------------------------------------------
def cited_labels(text: str) -> list[tuple[str, int]]:
    """(label, line number) of every model-section citation in ``text``, in every spelling used."""
    hits = []
    for pattern in CITATION_PATTERNS:
        for m in pattern.finditer(text):
            groups = [g for g in m.groups() if g]
            first, tail = groups[0], "".join(groups[1:])
            hits += [(m.start(), first)] + [(m.start(), lab) for lab in re.findall(r"\(\s*([a-z])\s*\)", tail)]
    return [(label, text.count("\n", 0, start) + 1) for start, label in sorted(hits, key=lambda h: h[0])]


def repository_files(root: Path = ROOT) -> Iterator[Path]:
    """Text files of the project; hidden folders (.git, .venv, ...) and caches are not entered."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
        for name in sorted(files):
            if name.endswith(SCANNED_SUFFIXES):
                yield Path(folder, name)


def headed_labels(doc_text: str) -> list[str]:
    """Labels that have a ``## (x) Title`` heading in the model description."""
    return HEADING.findall(doc_text)


def unresolved_citations(files: Iterable[tuple[str, str]], labels: set[str]) -> list[str]:
    """``path:line cites (x)`` for every citation of a label without a heading."""
    return [f"{name}:{line} cites ({label})" for name, text in files
            for label, line in cited_labels(text) if label not in labels]


# --------------------------------------------------------------------------------------------------
# Resolving dotted names by reading the source
# --------------------------------------------------------------------------------------------------
def module_file(module: str, root: Path = ROOT) -> Path | None:
    """Source file of a dotted module name inside the repository, or None."""
    base = root.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _absolute(module: str, node: ast.ImportFrom, path: Path) -> str:
    """Absolute module name of an ``ImportFrom`` inside ``module`` (which lives in ``path``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _body_names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names bound by definitions and assignments in a module or class body."""
    out: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        out[name.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.If | ast.Try):  # e.g. optional imports / fallbacks
            out.update(_body_names(node.body))
    return out


def resolve_in_module(module: str, attrs: list[str], root: Path = ROOT, _seen: frozenset = frozenset()) -> bool:
    """True if ``module.attrs[0].attrs[1]...`` is defined (a class attribute for the later parts)."""
    path = module_file(module, root)
    if path is None or (module, tuple(attrs)) in _seen:
        return False
    seen = _seen | {(module, tuple(attrs))}
    if not attrs:
        return True
    tree = ast.parse(path.read_text(encoding="utf-8"))
    head, rest = attrs[0], attrs[1:]
    defined = _body_names(tree.body)
    if head in defined:
        node = defined[head]
        if not rest:
            return True
        return isinstance(node, ast.ClassDef) and _resolve_in_class(node, rest)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, path)
            for alias in node.names:
                if alias.name == "*" and resolve_in_module(source, attrs, root, seen):
                    return True
                if (alias.asname or alias.name) == head:
                    if module_file(f"{source}.{alias.name}", root) is not None:  # a submodule
                        return resolve_in_module(f"{source}.{alias.name}", rest, root, seen)
                    return resolve_in_module(source, [alias.name, *rest], root, seen)
    if module_file(f"{module}.{head}", root) is not None:  # a submodule not imported by the package
        return resolve_in_module(f"{module}.{head}", rest, root, seen)
    return False


def _resolve_in_class(cls: ast.ClassDef, attrs: list[str]) -> bool:
    names = _body_names(cls.body)
    if attrs[0] not in names:
        return False
    node = names[attrs[0]]
    return len(attrs) == 1 or (isinstance(node, ast.ClassDef) and _resolve_in_class(node, attrs[1:]))


def resolve_dotted(name: str, root: Path = ROOT) -> bool:
    """True if the dotted name is a module of the repository or is defined in one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        if module_file(module, root) is not None:
            if resolve_in_module(module, parts[cut:], root):
                return True
            return _resolve_by_import(module, parts[cut:])
    return False


def _resolve_by_import(module: str, attrs: list[str]) -> bool:
    """Last resort for names the source does not show (dynamic attributes): import and getattr."""
    try:
        obj = importlib.import_module(module)
        for a in attrs:
            obj = getattr(obj, a)
    except (ImportError, AttributeError):
        return False
    return True


def resolve_file_ref(ref: str, root: Path = ROOT) -> bool:
    """``path/to/file.py`` exists, or ``path/to/test_x.py::name`` names a top-level def/class in it."""
    path_part, _, name = ref.partition("::")
    path = root / path_part
    if not path.is_file():
        return False
    if not name:
        return True
    defined = _body_names(ast.parse(path.read_text(encoding="utf-8")).body)
    head, *rest = name.split("::")[0].split(".")
    if head not in defined:
        return False
    return not rest or (isinstance(defined[head], ast.ClassDef) and _resolve_in_class(defined[head], rest))


def _is_file_ref(token: str) -> bool:
    return token.split("::")[0].endswith(".py")


def named_references(doc_text: str) -> list[str]:
    """Backticked code names in the doc's **Implemented in:** / **Tested in:** paragraphs."""
    out = []
    for para in REF_PARAGRAPH.findall(doc_text):
        for token in BACKTICK.findall(para):
            token = token.strip().removesuffix("()")
            if token.split(".")[0] in PACKAGES or _is_file_ref(token):
                out.append(token)
    return out


def unresolved_references(doc_text: str, root: Path = ROOT) -> list[str]:
    bad = []
    for ref in named_references(doc_text):
        ok = resolve_file_ref(ref, root) if _is_file_ref(ref) else resolve_dotted(ref, root)
        if not ok:
            bad.append(ref)
    return bad


# --------------------------------------------------------------------------------------------------
# Markdown tables
# --------------------------------------------------------------------------------------------------
def section(doc_text: str, label: str) -> str:
    """Text of section ``(label)`` up to the next ``## `` heading."""
    m = re.search(rf"^##\s+\({label}\)\s.*?(?=^## |\Z)", doc_text, re.MULTILINE | re.DOTALL)
    assert m, f"docs/model.md has no section ({label})"
    return m.group(0)


def table_after(text: str, marker: str) -> list[list[str]]:
    """Body rows (cells stripped) of the first Markdown table after the line containing ``marker``."""
    start = text.index(marker)
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # drop the header row


NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


def first_number(cell: str) -> float | None:
    m = NUMBER.search(cell.replace("`", ""))
    return None if m is None else float(m.group(0))


# ==================================================================================================
# Tests
# ==================================================================================================
@pytest.fixture(scope="module")
def doc_text() -> str:
    assert MODEL_DOC.is_file(), "docs/model.md is missing"
    return MODEL_DOC.read_text(encoding="utf-8")


def test_every_cited_section_has_a_heading(doc_text):
    labels = set(headed_labels(doc_text))
    files = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8", errors="replace")) for p in repository_files()]
    n_citations = sum(len(cited_labels(text)) for _, text in files)
    assert n_citations > 100, f"only {n_citations} citations found: is the scanner broken?"
    missing = unresolved_citations(files, labels)
    assert not missing, "spec-section citations without a heading in docs/model.md:\n" + "\n".join(missing)


def test_headings_are_unique_and_in_order(doc_text):
    labels = headed_labels(doc_text)
    assert len(labels) == len(set(labels)), f"duplicate section headings: {labels}"
    assert labels == sorted(labels), f"sections out of order: {labels}"


def test_implemented_in_names_exist(doc_text):
    refs = named_references(doc_text)
    assert len(refs) > 50, f"only {len(refs)} code references found under 'Implemented in'"
    bad = unresolved_references(doc_text)
    assert not bad, "docs/model.md names code that does not exist:\n" + "\n".join(bad)


def test_every_section_says_where_it_is_implemented(doc_text):
    lacking = [lab for lab in headed_labels(doc_text)
               if not re.search(r"^\*\*Implemented in:\*\*", section(doc_text, lab), re.MULTILINE)]
    assert not lacking, f"sections without an 'Implemented in:' line: {lacking}"


def test_parameter_table_matches_the_code(doc_text):
    from proda_engine.parameters import PARAMETERS, to_physical

    rows = table_after(section(doc_text, "c"), "<!-- parameter-table -->")
    assert [r[1].strip("`") for r in rows] == [p.name for p in PARAMETERS]
    mid = to_physical(np.full(len(PARAMETERS), 0.5))
    for i, (row, p) in enumerate(zip(rows, PARAMETERS)):
        index, _, _, units, lower, upper, default, at_mid, group = row
        assert int(index) == i + 1
        assert units.strip("`") == p.units, p.name
        assert first_number(lower) == pytest.approx(p.lower, rel=1e-9), p.name
        assert first_number(upper) == pytest.approx(p.upper, rel=1e-9), p.name
        documented_default = first_number(default)
        if p.default is None:
            assert documented_default is None, f"{p.name}: the code has no fixed default, the doc has {default!r}"
        else:
            assert documented_default == pytest.approx(p.default, rel=1e-3), p.name
        assert first_number(at_mid) == pytest.approx(mid[i], rel=1e-9), p.name
        assert group == p.group, p.name


def test_grid_table_matches_the_code(doc_text):
    from proda_engine.grid import get_grid

    g = get_grid("clm5_20")
    rows = table_after(section(doc_text, "a"), "<!-- grid-table -->")
    assert len(rows) == g.n_layers + 1
    for j, row in enumerate(rows):
        dz, zi, zn, dn = (first_number(c) for c in row[1:5])
        if j < g.n_layers:
            assert (dz, zi, zn) == (pytest.approx(g.dz[j]), pytest.approx(g.z_interface[j]), pytest.approx(g.z_node[j]))
        else:
            assert (dz, zi, zn) == (pytest.approx(g.dz_below), pytest.approx(g.z_interface_below),
                                    pytest.approx(g.z_node_below))
        assert dn == pytest.approx(g.dn[j])


# --- the checker itself can fail -------------------------------------------------------------------
def test_scanner_finds_every_spelling():
    text = ("a = 1  # spec §(j) item 5\n"
            "# spec section (m) and §(k) and § (b)\n"
            "# Research-scale runs (spec section l).\n"
            "see clm5-matrix-spec.md §(o); data contract §4 and guide §3.6 are other documents\n"
            "the spec section about x, the spec a user writes and the spec's (x) are not citations\n"
            "Spec sections (i), (j), (m) and (n). help='spec (g) closure'; spec (c) and (e)\n")
    assert [lab for lab, _ in cited_labels(text)] == ["j", "m", "k", "b", "l", "o", "i", "j", "m", "n", "g", "c", "e"]
    assert [line for _, line in cited_labels(text)] == [1, 2, 2, 2, 3, 4, 6, 6, 6, 6, 6, 6, 6]


def test_a_citation_without_heading_is_reported():
    # Built from pieces so this file itself holds no citation of a missing label.
    files = [("x.py", "# spec §(j)\n# spec §(" + "z)\n"), ("y.md", "spec section (" + "y)")]
    assert unresolved_citations(files, {"j"}) == ["x.py:2 cites (z)", "y.md:1 cites (y)"]


def test_a_missing_name_is_reported():
    doc = ("**Implemented in:** `proda_engine.physics.scalars.xi_temperature`, "
           "`proda_engine.physics.scalars.no_such_function`, `proda_engine.no_such_module`,\n"
           "`proda_engine.physics.Forcing.uniform`, `proda_engine.grid.Grid.interval_weights`, "
           "`proda_engine.physics.transfer`.\n\n"
           "**Tested in:** `tests/physics/test_crosscheck.py::test_case_a`,\n"
           "`tests/physics/test_crosscheck.py::nope`.\n")
    assert unresolved_references(doc) == ["proda_engine.physics.scalars.no_such_function",
                                          "proda_engine.no_such_module",
                                          "tests/physics/test_crosscheck.py::nope"]
