"""Constants and lookup tables of the default world: builder version, base file, named regions,
land-cover / soil-class / input-split tables, month lengths, site counts, and the file layout of a
built world (:class:`WorldPaths`).

Everything here is data (no derivation); every other module of :mod:`proda_engine.data.world`
reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bump when any derivation of the world changes: it is part of the cache key.
BUILDER_VERSION = "world-1.2.0"
#: The committed 0.5-degree base file (``assets/world/`` at the repository root).
BASE_WORLD = Path(__file__).resolve().parents[3] / "assets" / "world" / "base_world_0p5.nc"
#: ISO 3166-1 numeric id (text) -> [alpha-2, name], for the WoSIS country columns.
COUNTRIES_JSON = BASE_WORLD.parent / "countries.json"
#: ``_FillValue`` of every floating-point variable the world writes (non-land cells).
FILL = 1e36
#: Soil layer grid of the world's forcing (see :mod:`proda_engine.grid`).
GRID_NAME = "clm5_20"
#: HWSD topsoil fields of the base file (% weight; NaN where HWSD has no soil).
HWSD_FIELDS = ("hwsd_sand", "hwsd_silt", "hwsd_clay", "hwsd_oc")
#: Named regions: (lon_min, lon_max, lat_min, lat_max), degrees; cell centres inside are kept.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "globe": (-180.0, 180.0, -90.0, 90.0),
    "europe": (-12.0, 45.0, 34.0, 72.0),
    "conus": (-125.0, -66.0, 24.0, 50.0),
    "amazon": (-80.0, -44.0, -20.0, 6.0),
    "africa": (-20.0, 55.0, -36.0, 38.0),
    "australia": (112.0, 155.0, -45.0, -10.0),
    "siberia": (60.0, 180.0, 45.0, 75.0),
    "tiny": (5.0, 10.0, 45.0, 50.0),  # 10 x 10 cells around the Alps, for tests
    "tiny_arctic": (125.0, 130.0, 62.0, 67.0),  # 10 x 10 cells of Yakutian permafrost, for tests
}

#: IGBP class -> ESA CCI land cover, as the 1-based index of the 22 top-level ESA CCI classes
#: (10, 20, 30, ..., 220) that the PRODA covariate ``ESA_Land_Cover`` uses (spec section (n): 1-4
#: agriculture, 5-10 and 16-17 forest, 11-15 grass/shrub, 18 wetland, >= 19 other).
IGBP_TO_ESA = np.array(
    [
        21,  # 0 water -> 210 water
        7,  # 1 evergreen needleleaf -> 70
        5,  # 2 evergreen broadleaf -> 50
        8,  # 3 deciduous needleleaf -> 80
        6,  # 4 deciduous broadleaf -> 60
        9,  # 5 mixed forest -> 90
        12,  # 6 closed shrublands -> 120
        12,  # 7 open shrublands -> 120 (-> 140 lichens/mosses in tundra, see _esa_land_cover)
        10,  # 8 woody savannas -> 100 mosaic tree/shrub
        11,  # 9 savannas -> 110 mosaic herbaceous
        13,  # 10 grasslands -> 130 (-> 140 in tundra)
        18,  # 11 permanent wetlands -> 180
        1,  # 12 croplands -> 10
        19,  # 13 urban -> 190
        4,  # 14 cropland/natural mosaic -> 40
        22,  # 15 snow and ice -> 220
        20,  # 16 barren -> 200
    ],
    dtype=np.int16,
)
ESA_CLASSES = (
    "cropland_rainfed cropland_irrigated mosaic_cropland mosaic_natural_vegetation "
    "tree_broadleaved_evergreen tree_broadleaved_deciduous tree_needleleaved_evergreen "
    "tree_needleleaved_deciduous tree_mixed mosaic_tree_shrub mosaic_herbaceous shrubland "
    "grassland lichens_mosses sparse_vegetation tree_flooded_fresh tree_flooded_saline "
    "shrub_herbaceous_flooded urban bare_areas water snow_and_ice"
).split()

#: Fraction of NPP entering CWD, metabolic (L1), cellulose (L2) and lignin (L3) litter, by IGBP class.
#: Forests drop wood (CWD) and lignin-rich litter; grasses and crops mostly metabolic litter.
INPUT_SPLIT_BY_IGBP = np.array(
    [
        [0.00, 0.50, 0.35, 0.15],  # 0 water (not land in the world)
        [0.25, 0.22, 0.33, 0.20],  # 1 ENF
        [0.25, 0.27, 0.33, 0.15],  # 2 EBF
        [0.25, 0.23, 0.33, 0.19],  # 3 DNF
        [0.25, 0.27, 0.33, 0.15],  # 4 DBF
        [0.25, 0.25, 0.33, 0.17],  # 5 mixed forest
        [0.12, 0.33, 0.38, 0.17],  # 6 closed shrub
        [0.08, 0.37, 0.38, 0.17],  # 7 open shrub
        [0.12, 0.35, 0.37, 0.16],  # 8 woody savanna
        [0.05, 0.43, 0.38, 0.14],  # 9 savanna
        [0.00, 0.48, 0.40, 0.12],  # 10 grassland
        [0.05, 0.35, 0.40, 0.20],  # 11 wetland
        [0.00, 0.52, 0.38, 0.10],  # 12 cropland
        [0.02, 0.48, 0.38, 0.12],  # 13 urban
        [0.05, 0.45, 0.38, 0.12],  # 14 crop/natural mosaic
        [0.00, 0.50, 0.35, 0.15],  # 15 snow and ice
        [0.02, 0.48, 0.36, 0.14],  # 16 barren
    ]
)
#: Vegetation carbon residence time by IGBP class (yr), for the ``cesm2_vegc`` covariate (NPP x tau).
VEG_TAU_YR = np.array([1, 35, 30, 35, 30, 32, 8, 5, 12, 5, 1.5, 8, 1, 2, 3, 1, 2], dtype=float)

USDA_TEXTURE = (
    "clay silty_clay sandy_clay clay_loam silty_clay_loam sandy_clay_loam loam silt_loam "
    "sandy_loam silt loamy_sand sand"
).split()
WRB_GROUPS = (
    "Histosols Cryosols Leptosols Arenosols Ferralsols Acrisols Calcisols Podzols Chernozems "
    "Kastanozems Luvisols Cambisols Vertisols Gleysols Regosols"
).split()
#: USDA suborder proxy for each WRB group above (same order).
USDA_SUBORDERS = (
    "Saprists Orthels Orthents Psamments Udox Udults Calcids Orthods Udolls Ustolls Udalfs "
    "Udepts Usterts Aquepts Cambids"
).split()

DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)
MID_MONTH_DOY = np.cumsum(DAYS_IN_MONTH) - DAYS_IN_MONTH / 2
SOIL_DEPTHS_CM = (0, 30, 100)

#: Land cells of the full 0.5-degree world without Antarctica; regional worlds scale their site count by it.
GLOBE_LAND_CELLS = 61_604
#: Twin profile sites on the full globe when ``n_sites`` is not given.
DEFAULT_SITES = 50_000

#: WoSIS 2019 continent weights of the profile count (Batjes et al. 2020), for the site sampler.
CONTINENT_WEIGHTS: dict[int, float] = {5: 0.37, 6: 0.22, 4: 0.18, 1: 0.14, 7: 0.05, 3: 0.034, 2: 0.0}


def resolve_region(region: str | tuple[float, float, float, float] | None) -> tuple[float, float, float, float]:
    """Region box (lon_min, lon_max, lat_min, lat_max) from a name in :data:`REGIONS` or a tuple."""
    if region is None:
        return REGIONS["globe"]
    if isinstance(region, str):
        try:
            return REGIONS[region.lower()]
        except KeyError:
            raise ValueError(
                f"unknown region {region!r}; expected one of {sorted(REGIONS)} or (lon_min, lon_max, lat_min, lat_max)"
            ) from None
    box = tuple(float(v) for v in region)
    if len(box) != 4 or not (box[0] < box[1] and box[2] < box[3]):
        raise ValueError(f"region box must be (lon_min, lon_max, lat_min, lat_max) with min < max, got {region!r}")
    return box  # type: ignore[return-value]


@dataclass(frozen=True)
class WorldPaths:
    """Files of one built world (all in ``root``)."""

    root: Path
    forcing: Path
    covariates: Path
    truth: Path
    sites: Path
    horizons: Path
    manifest: Path

    @property
    def wosis_dir(self) -> Path:
        """Folder of the twin observations in WoSIS 2019 layout (see :func:`make_twin_profiles`)."""
        return self.root / "wosis"

    @classmethod
    def in_folder(cls, root: str | os.PathLike) -> WorldPaths:
        """The file layout of a world built into ``root`` (nothing is read or created)."""
        r = Path(root)
        return cls(
            r,
            r / "forcing.nc",
            r / "covariates.nc",
            r / "truth_parameters.nc",
            r / "sites.csv",
            r / "horizons.csv",
            r / "manifest.json",
        )
