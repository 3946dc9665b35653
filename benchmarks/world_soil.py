"""The default world's soil and twin truth beside real maps: numbers for docs/world.md.

1. The base file's HWSD topsoil against the shared 0.5-degree HWSD aggregate
   (``../shared/data/real/grids/hwsd_topsoil_0.5deg.nc``, used for checking only; skipped if absent).
2. Where each land cell's topsoil comes from (HWSD or a counted fallback) and the derived soil
   covariates' ranges.
3. The twin truth's SOC totals (what ``proda world`` prints), its median 1-m stock by Köppen group, and
   the twin truth against the shipped Sanderman et al. (2017) reference map (totals, r, per Köppen and
   land-cover group).

Run after the default world is built (``proda world``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/world_soil.py [--figures]

``--figures`` redraws docs/img/world_clay.png, world_soc_truth.png, reference_soc_0_100cm.png and
reference_difference_0_100cm.png. Writes benchmarks/results/world_soil.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_HWSD = REPO.parent / "shared" / "data" / "real" / "grids" / "hwsd_topsoil_0.5deg.nc"


def hwsd_check(base) -> dict:
    import numpy as np
    import xarray as xr

    if not SHARED_HWSD.exists():
        return {"skipped": f"{SHARED_HWSD} not found"}
    ref = xr.open_dataset(SHARED_HWSD)
    out = {}
    for mine, theirs in (("hwsd_sand", "T_SAND"), ("hwsd_silt", "T_SILT"), ("hwsd_clay", "T_CLAY"),
                         ("hwsd_oc", "T_OC"), ("hwsd_fraction", "valid_fraction")):
        a, b = base[mine].values.astype(float), ref[theirs].values.astype(float)
        same_mask = bool((np.isfinite(a) == np.isfinite(b)).all()) if mine != "hwsd_fraction" else True
        ok = np.isfinite(a) & np.isfinite(b)
        out[mine] = {"same_cells": same_mask, "max_abs_diff": float(np.abs(a - b)[ok].max()),
                     "mean_abs_diff": float(np.abs(a - b)[ok].mean())}
    return out


def figures(cov, truth_stock, sites, ref_stock, lat, lon) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    img = REPO / "docs" / "img"
    out = []

    def draw(data, title, cmap, vmin, vmax, units, name, points=None, diverging=False):
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        im = ax.pcolormesh(lon, lat, data, cmap=cmap, vmin=vmin, vmax=vmax, shading="auto")
        if points is not None:
            ax.scatter(points[0], points[1], s=0.2, c="blue", alpha=0.3, linewidths=0)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-60, 85)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, label=units, fraction=0.025, pad=0.02)
        fig.tight_layout()
        fig.savefig(img / name, dpi=100)
        plt.close(fig)
        out.append(name)

    draw(cov["Clay_Content_0cm"].values, "Clay_Content_0cm (HWSD v1.2 topsoil)", "copper_r", 0, 60, "%",
         "world_clay.png")
    draw(truth_stock, "Truth SOC stock 0-1 m (twin, conservative closure) and sites", "YlOrBr", 0, 40,
         "kg C m-2", "world_soc_truth.png", points=(sites["longitude"], sites["latitude"]))
    draw(ref_stock, "Sanderman et al. 2017: SOC stock 0-1 m (2010 AD)", "YlOrBr", 0, 40, "kg C m-2",
         "reference_soc_0_100cm.png")
    diff = truth_stock - ref_stock
    lim = float(np.nanpercentile(np.abs(diff), 98))
    draw(diff, "Twin truth minus Sanderman et al. 2017, 0-1 m", "RdBu_r", -lim, lim, "kg C m-2",
         "reference_difference_0_100cm.png")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="default")
    ap.add_argument("--figures", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import numpy as np
    import pandas as pd
    import xarray as xr

    from proda_engine import api
    from proda_engine.data import world as W
    from proda_engine.products.regions import KOPPEN_GROUPS

    t0 = time.perf_counter()
    base = W.load_base()
    res: dict = {"hwsd_vs_shared_aggregate": hwsd_check(base)}
    paths = W.ensure_world(args.world)
    man = json.loads(paths.manifest.read_text())
    res["builder_version"] = man["builder_version"]
    res["soil_source_cells"] = man.get("soil_source_cells")
    cov = xr.open_dataset(paths.covariates)
    land = np.isfinite(cov["cell_area"].values)
    res["covariates_p5_p50_p95"] = {
        v: [round(float(x), 2) for x in np.nanpercentile(cov[v].values[land], [5, 50, 95])]
        for v in ("Sand_Content_0cm", "Clay_Content_0cm", "Clay_Content_100cm", "Organic_Carbon_0cm",
                  "Organic_Carbon_100cm", "Bulk_Density_0cm", "Bulk_Density_100cm", "CEC_0cm", "pH_Water_0cm",
                  "SWC_v_Wilting_Point_0cm", "Coarse_Fragments_v_0cm")}
    res["truth_soc_pg"] = {d: round(float(api.what_if({}, depth=d, world=args.world, source="twin_truth")
                                          .totals["total_pg"]), 1) for d in api.depth_intervals()}
    truth = api.what_if({}, depth="0-100cm", world=args.world, source="twin_truth").maps["soc_stock"].values
    kop = cov["Koppen_Climate_2018"].values
    groups = {g: truth[(kop >= lo) & (kop <= hi)] for g, (lo, hi) in KOPPEN_GROUPS.items()}
    res["truth_median_1m_by_koppen"] = {g: round(float(np.nanmedian(x)), 1) if np.isfinite(x).any() else None
                                        for g, x in groups.items()}
    rows = []
    for d in ("0-30cm", "0-100cm", "0-200cm"):
        rc = api.reference_comparison("twin_truth", d, world=args.world)
        rows.append(rc.table.assign(interval=d))
    tab = pd.concat(rows, ignore_index=True)
    keep = tab[tab.region.isin(["globe", *[f"koppen:{g}" for g in KOPPEN_GROUPS], "landcover:forest",
                                "landcover:grass_shrub", "landcover:agriculture", "landcover:other"])]
    res["truth_vs_sanderman2017"] = keep[["interval", "region", "model_pg", "reference_pg", "r", "model_mean",
                                          "reference_mean", "n_cells"]].round(3).to_dict("records")
    if args.figures:
        ref = api.reference_comparison("twin_truth", "0-100cm", world=args.world).maps["reference"].values
        sites = pd.read_csv(paths.sites)
        res["figures"] = figures(cov, truth, sites, ref, cov["lat"].values, cov["lon"].values)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out = REPO / "benchmarks" / "results" / "world_soil.json"
    out.write_text(json.dumps(res, indent=1, ensure_ascii=False))
    print(json.dumps({k: v for k, v in res.items() if k != "truth_vs_sanderman2017"}, indent=1, ensure_ascii=False))
    g = keep[keep.region == "globe"]
    print("| interval | twin truth Pg C | Sanderman et al. 2017 Pg C | r |\n|---|---|---|---|")
    for _, r in g.iterrows():
        print(f"| {r['interval']} | {r['model_pg']:.0f} | {r['reference_pg']:.0f} | {r['r']:.2f} |")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
