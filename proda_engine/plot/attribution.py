"""Headline figure of component control (:mod:`proda_engine.products.attribution`)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import xarray as xr

from proda_engine.plot._save import pyplot, save_figure
from proda_engine.products.attribution import EXPERIMENT_LABELS, explained_variation


def plot_explained_variation(gridded: xr.Dataset, evaluation, path: str | PathLike, *,
                             depth: str = "whole") -> Path:
    """Headline figure: explained spatial variation (100 E, all depths pooled; median with the
    16th-84th percentile band over members) against the global stock (mean +- s.d.) per experiment."""
    plt = pyplot()

    ex = explained_variation(evaluation).set_index("experiment")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    cmap = plt.get_cmap("tab10")
    for i, exp in enumerate(gridded["experiment"].values):
        if exp not in ex.index:
            continue
        s = gridded["soc_total"].sel(experiment=exp, depth=depth).values
        y = ex.loc[exp]
        yerr = [[y.explained_pct_median - y.explained_pct_p16], [y.explained_pct_p84 - y.explained_pct_median]]
        ax.errorbar(float(np.mean(s)), y.explained_pct_median, yerr=yerr,
                    xerr=float(np.std(s, ddof=1)) if s.size > 1 else None, fmt="o", color=cmap(i % 10),
                    capsize=3, label=EXPERIMENT_LABELS.get(str(exp), str(exp)))
    ax.set_xlabel(f"global SOC stock, {depth} (Pg C)")
    ax.set_ylabel("explained spatial variation, 100 E (%)")
    ax.set_title(f"Component control ({gridded.attrs.get('world', '')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
