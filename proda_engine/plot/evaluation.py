"""Figures of the held-out evaluation (:mod:`proda_engine.evaluation`): observed-vs-modelled scatter
per method and the parameter-recovery bar chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from proda_engine.parameters import PARAMETER_NAMES
from proda_engine.plot._save import pyplot, save_figure


def plot_evaluation(result: Any, out_dir: str | Path, *, max_points: int = 20000,
                    seed: int = 0) -> dict[str, Path]:
    """Observed-vs-modelled scatter per method (log axes, 1:1 line) and the recovery bar chart (PNG).

    ``result`` is a :class:`proda_engine.evaluation.EvaluationResult` (not imported: the result's
    ``write`` calls this function, and the import graph has no cycles); method labels come from its
    ``labels``.
    """
    plt = pyplot()

    out = Path(out_dir)
    files: dict[str, Path] = {}
    keys = list(result.pairs)
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.5), squeeze=False,
                                 sharex=True, sharey=True)
        rng = np.random.default_rng(seed)
        allv = np.concatenate([p[["observed_kg_m3", "modelled_kg_m3"]].to_numpy().ravel()
                               for p in result.pairs.values()])
        allv = allv[np.isfinite(allv) & (allv > 0)]
        lo, hi = (np.quantile(allv, 0.001), np.quantile(allv, 0.999)) if allv.size else (0.1, 100.0)
        for ax, k in zip(axes[0], keys, strict=True):
            p = result.pairs[k]
            ok = np.isfinite(p["modelled_kg_m3"]) & (p["modelled_kg_m3"] > 0) & (p["observed_kg_m3"] > 0)
            p = p[ok]
            if len(p) > max_points:  # a readable, unbiased thinning of dense clouds
                p = p.iloc[np.sort(rng.choice(len(p), max_points, replace=False))]
            sc = ax.scatter(p["observed_kg_m3"], p["modelled_kg_m3"], c=p["depth_m"], s=3, alpha=0.35,
                            cmap="viridis_r", vmin=0, vmax=2, rasterized=True, linewidths=0)
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            m = result.metrics[k]["all"]
            ax.set_title(f"{result.labels[k]}\nR²={m['r2']:.2f} E={m['e']:.2f} RMSE={m['rmse']:.1f}", fontsize=8)
            ax.set_xlabel("observed SOC (kg C m⁻³)", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0][0].set_ylabel("modelled SOC (kg C m⁻³)", fontsize=8)
        cb = fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.8, pad=0.01)
        cb.set_label("depth (m)", fontsize=8)
        fig.suptitle(f"Held-out test sites, world '{result.world}' ({result.n_test_sites} sites, "
                     f"{result.n_test_layers} horizons)", fontsize=9, y=1.07)
        files["scatter"] = out / "evaluation_scatter.png"
        save_figure(fig, files["scatter"], dpi=110, bbox_inches="tight")
    if result.recovery:
        # a homogeneous source (batch DA) has no spatial pattern: r is undefined, so it gets no bars
        meths = [k for k in result.recovery if np.isfinite(list(result.recovery[k].values())).any()]
        fig, ax = plt.subplots(figsize=(11, 3.6))
        x = np.arange(len(PARAMETER_NAMES))
        w = 0.8 / len(meths)
        for i, k in enumerate(meths):
            r = np.array([result.recovery[k][p] for p in PARAMETER_NAMES], float)
            ax.bar(x + (i - (len(meths) - 1) / 2) * w, np.nan_to_num(r), w, label=result.labels[k])
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x)
        ax.set_xticklabels(PARAMETER_NAMES, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("Pearson r with the truth")
        ax.set_ylim(-1, 1)
        ax.set_title(f"Parameter recovery at {result.n_test_cells} held-out test cells (world '{result.world}'); "
                     "a homogeneous source (batch DA) has undefined r and is not shown", fontsize=9)
        ax.legend(fontsize=8, ncol=max(len(meths), 1))
        files["recovery"] = out / "evaluation_recovery.png"
        save_figure(fig, files["recovery"], dpi=110, bbox_inches="tight")
    return files
