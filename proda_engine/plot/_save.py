"""The figure backend and the one way a figure reaches disk."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from proda_engine.data.writers import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (headless servers, CI, workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | PathLike, **savefig: Any) -> Path:
    """Save ``fig`` atomically at ``path`` (format from its suffix, e.g. ``.png``), then close it.

    Through :func:`proda_engine.data.writers.atomic_write`: the temporary file's name ends in
    ``.tmp``, so the format is passed explicitly; the bytes equal ``fig.savefig(path, **savefig)``.
    """
    p = Path(path)
    fmt = savefig.pop("format", None) or (p.suffix[1:].lower() or "png")
    try:
        return atomic_write(p, lambda tmp: fig.savefig(tmp, format=fmt, **savefig))
    finally:
        pyplot().close(fig)
