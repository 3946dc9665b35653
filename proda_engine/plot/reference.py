"""Figure of the comparison with a reference SOC map (:mod:`proda_engine.products.reference`)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from proda_engine.plot._save import pyplot, save_figure


def write_reference_figure(maps: xr.Dataset, table, out: str | PathLike) -> Path:
    """``<stem of out>_reference.png``: :func:`plot_reference` of what
    :func:`~proda_engine.products.reference.write_reference_comparison` wrote next to ``out``."""
    o = Path(out)
    return plot_reference(maps, table, o.with_name(o.stem + "_reference.png"))


def plot_reference(maps: xr.Dataset, table, path: str | PathLike) -> Path:
    """Difference maps per interval with the totals and correlation in the titles."""
    plt = pyplot()

    names = [v for v in maps.data_vars if str(v).startswith("difference_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, v, (_, row) in zip(axes[0], names, table.iterrows()):
        d = maps[v].values
        lim = float(np.nanpercentile(np.abs(d), 98)) if np.isfinite(d).any() else 1.0
        im = ax.pcolormesh(maps["lon"], maps["lat"], d, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
        ax.set_title(f"{row.interval}: model {row.model_pg:.1f} vs ref {row.reference_pg:.1f} Pg, r = {row.r:.2f}",
                     fontsize=8)
        fig.colorbar(im, ax=ax, label="kg C m-2")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
