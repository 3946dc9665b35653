#!/usr/bin/env python
"""Pack the Sanderman, Hengl & Fiske (2017) SOC stock maps into the shipped reference map
``assets/reference/whrc_socs_0p5.nc`` (catalog source ``sanderman2017_socs``).

Input: the 0.5-degree aggregate of the 5 arc-minute GeoTIFFs ``SOCS/SOCS_0_{30,100,200}cm_year_2010AD*.tif``
of github.com/whrc/Soil-Carbon-Debt (commit 14919ed, MIT licence), area-weighted block means over the
5' cells with data, Mg C ha-1 / 10 = kg C m-2 (``../shared/data/real/grids/whrc_socs_0.5deg.nc`` beside
the checkout, or ``--source``)::

    python scripts/build_reference_map.py [--source whrc_socs_0.5deg.nc]

The shipped file keeps the 2010 AD stocks for 0-30, 0-100 and 0-200 cm as int16 with scale 0.01 kg C m-2
(max 327 kg C m-2; the maps reach 246) and the fraction of each cell with data (scale 0.001),
zlib-compressed: ~0.5 MB. Ocean and cells without data are missing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "real" / "grids" / "whrc_socs_0.5deg.nc"
OUT = ROOT / "assets" / "reference" / "whrc_socs_0p5.nc"

#: shipped name -> (variable of the aggregate, depth interval)
VARIABLES = {
    "soc_0_30cm": ("SOCS_0_30cm_year_2010AD", "0-30cm"),
    "soc_0_100cm": ("SOCS_0_100cm_year_2010AD", "0-100cm"),
    "soc_0_200cm": ("SOCS_0_200cm_year_2010AD", "0-200cm"),
}
CITATION = ("Sanderman, J., Hengl, T., Fiske, G.J. (2017) Soil carbon debt of 12,000 years of human land use. "
            "PNAS 114(36), 9575-9580. doi:10.1073/pnas.1706103114")
SOC_SCALE = 0.01
FRACTION_SCALE = 0.001


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="0.5-degree WHRC SOCS aggregate (netCDF)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with xr.open_dataset(args.source) as src:
        src = src.load()
    lat, lon = src["lat"].values, src["lon"].values
    if lat.size != 360 or lon.size != 720 or not np.all(np.diff(lat) > 0) or abs(lon[0] + 179.75) > 1e-6:
        raise SystemExit(f"{args.source}: expected the 0.5-degree grid (lat ascending, lon -179.75..179.75)")
    data = {}
    for name, (var, interval) in VARIABLES.items():
        a = src[var].values.astype(np.float64)
        if np.nanmax(a) / SOC_SCALE > 32766:
            raise SystemExit(f"{var}: {np.nanmax(a)} kg C m-2 does not fit int16 at scale {SOC_SCALE}")
        data[name] = (("lat", "lon"), a, {
            "units": "kg C m-2", "long_name": f"soil organic carbon stock {interval}, year 2010 AD",
            "standard_name": "soil_mass_content_of_carbon", "depth_interval": interval,
            "source_variable": f"SOCS/{var}.tif (Mg C ha-1, / 10)",
            "cell_methods": "area: mean where land (area-weighted mean of the 5-arc-minute cells with data)"})
    data["data_fraction"] = (("lat", "lon"), np.nan_to_num(src["land_fraction"].values.astype(np.float64)), {
        "units": "1", "long_name": "fraction of the cell's 5-arc-minute cells with data"})
    ds = xr.Dataset(
        data,
        coords={"lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})},
        attrs={
            "title": "Soil organic carbon stocks 0-30, 0-100, 0-200 cm (Sanderman, Hengl & Fiske 2017), 0.5 degree",
            "references": CITATION,
            "source": "github.com/whrc/Soil-Carbon-Debt (commit 14919ed435886cccbe473c79b2d39063f84c532e), "
                      "SOCS/*.tif, aggregated to 0.5 degree by area-weighted block means; packed by "
                      "scripts/build_reference_map.py",
            "license": "MIT (the Soil-Carbon-Debt repository's licence)",
            "Conventions": "CF-1.8",
        },
    )
    enc = {name: {"dtype": "int16", "scale_factor": SOC_SCALE, "add_offset": 0.0, "_FillValue": np.int16(-32767),
                  "zlib": True, "complevel": 9, "shuffle": True} for name in VARIABLES}
    enc["data_fraction"] = {"dtype": "int16", "scale_factor": FRACTION_SCALE, "add_offset": 0.0,
                            "_FillValue": np.int16(-32767), "zlib": True, "complevel": 9, "shuffle": True}
    for c in ("lat", "lon"):
        enc[c] = {"_FillValue": None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.nc")
    ds.to_netcdf(tmp, encoding=enc, format="NETCDF4")
    os.replace(tmp, args.out)
    with xr.open_dataset(args.out) as back:
        for name in VARIABLES:
            err = float(np.nanmax(np.abs(back[name].values - ds[name].values)))
            assert err <= SOC_SCALE / 2 + 1e-9, (name, err)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
