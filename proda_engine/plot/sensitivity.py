"""Figures of the marginal sensitivity (:mod:`proda_engine.products.sensitivity`)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from proda_engine.plot._save import pyplot, save_figure
from proda_engine.products.sensitivity import SensitivityResult


def write_sensitivity_figures(res: SensitivityResult, folder: str | PathLike) -> dict[str, Path]:
    """``sensitivity_plus1pct.png`` and ``sensitivity_curves.png`` in ``folder`` (keys ``bar_png``,
    ``curves_png``), beside the tables :meth:`SensitivityResult.write` puts there."""
    d = Path(folder)
    return {"bar_png": plot_plus1pct(res, d / "sensitivity_plus1pct.png"),
            "curves_png": plot_curves(res, d / "sensitivity_curves.png")}


def plot_plus1pct(res: SensitivityResult, path: str | PathLike) -> Path:
    """Bar chart of the +1 % effects on the global stock (Pg C) and mean turnover (yr), mean +- s.d."""
    plt = pyplot()

    s = res.summary()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [f"{g}\n({m})" for g, m in zip(s["group"], s["metric"])]
    for ax, col, unit, title in ((axes[0], "plus1pct_stock_pg", "Pg C", "SOC stock"),
                                 (axes[1], "plus1pct_turnover_yr", "yr", "mean turnover")):
        v = s[f"{col}_mean"].to_numpy(float)
        e = np.nan_to_num(s[f"{col}_sd"].to_numpy(float))
        ax.bar(labels, v, yerr=e, color=["#1b9e77" if x >= 0 else "#d95f02" for x in v], capsize=3)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel(f"change for +1 % of the bulk process ({unit})")
        ax.set_title(f"{title} ({res.curves.attrs.get('world', '')}, {int(res.curves.attrs.get('n_members', 1))} "
                     f"member(s))")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_curves(res: SensitivityResult, path: str | PathLike) -> Path:
    """Response curves: S(q)/S(0) and T(q)/T(0) against 1 + R(q) (log-log), median with the
    16th-84th percentile band over members."""
    plt = pyplot()

    c = res.curves
    i0 = int(np.argmin(np.abs(c["level"].values)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.get_cmap("tab10")
    for ax, var, title in ((axes[0], "stock", "global SOC stock"), (axes[1], "turnover", "mean turnover")):
        for gi, g in enumerate(c["group"].values):
            x = 1.0 + c["process_change"].values[:, gi, :]
            y = c[var].values[:, gi, :] / c[var].values[:, gi, i0:i0 + 1]
            xm, ym = np.nanmedian(x, 0), np.nanmedian(y, 0)
            ax.plot(xm, ym, "o-", ms=3, color=colors(gi), label=f"{g} ({c['metric'].values[gi]})")
            if x.shape[0] > 1:
                ax.fill_between(xm, np.nanpercentile(y, 16, 0), np.nanpercentile(y, 84, 0), color=colors(gi),
                                alpha=0.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 + R (relative change of the bulk process)")
        ax.set_ylabel(f"{title} relative to q = 0")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
