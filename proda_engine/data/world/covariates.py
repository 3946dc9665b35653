"""Covariates of the world: :class:`Surface` (every 2-D and monthly 2-D field derived on the base grid,
typed, with units) from :func:`derive_surface`, and the ``covariates.nc`` dataset of spec section (m)
built from it (:func:`covariate_dataset`, :data:`COVARIATE_NAMES`).

Smooth random fields and standardisations use the whole globe, so any region is an exact subset.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from proda_engine.data.geosources import BECK_CLASSES, CONTINENTS
from proda_engine.data.world.base import land_mask, nc_var, sigmoid, smooth_noise, zscore
from proda_engine.data.world.climate import bioclim, bucket_wetness, thornthwaite_pet
from proda_engine.data.world.soils import HISTIC_OC_PCT, SOIL_SOURCES, derive_soil, topsoil_from_base
from proda_engine.data.world.tables import (
    ESA_CLASSES,
    GRID_NAME,
    IGBP_TO_ESA,
    SOIL_DEPTHS_CM,
    USDA_SUBORDERS,
    USDA_TEXTURE,
    VEG_TAU_YR,
    WRB_GROUPS,
)
from proda_engine.grid import get_grid


def noise_field(seed: int, res: float, shape: tuple[int, int], name: str, sigma_deg: float) -> np.ndarray:
    """Smooth standard-normal field ``name`` of the world (Gaussian blur of ``sigma_deg`` degrees, at
    least half a cell) on the global grid of spacing ``res`` degrees; see :func:`.base.smooth_noise`."""
    return smooth_noise(seed, name, shape, max(sigma_deg / res, 0.5))


@dataclass(frozen=True, eq=False)
class Surface:
    """The derived fields of the world on the whole base grid (the drivers of forcing, covariates, truth).

    Arrays are (lat, lon), or (12, lat, lon) for monthly fields, on the **global** base grid; a region
    is cut out when the files are written.

    Attributes:
        seed: seed of every smooth random field (:meth:`noise`).
        res: grid spacing, degrees.
        mask: world land cells (bool; >= 50 % land, no open water, optionally no Antarctica).
        ref: standardisation reference (bool): land cells of the globe without Antarctica.
        t_air: monthly air temperature, degC (12, lat, lon).
        p: monthly precipitation, mm month-1 (12, lat, lon).
        pet: Thornthwaite potential evapotranspiration, mm month-1 (12, lat, lon).
        wet_rel: bucket soil-water storage S/Smax at the end of each month, 1 (12, lat, lon).
        dtr: diurnal temperature range proxy, degC (12, lat, lon).
        igbp, koppen, continent, country: MODIS IGBP class 0..16, Koppen-Geiger (Beck 2018) code,
            continent code, ISO 3166-1 numeric country id.
        npp: annual net primary production, g C m-2 yr-1.
        elevation: mean surface elevation, m (coastal cells' sea floor set to 0).
        land_fraction: GLOBE land fraction, 1.
        mat, map, mi: mean annual temperature (degC), annual precipitation (mm yr-1) and moisture
            index P/PET (1, PET floored at 50 mm).
        z_t, z_p, arid, z_relief, z_elev: standardised drivers (1, global land reference) of MAT,
            log MAP, aridity (> 0 = drier than the land average), log relief and log elevation.
        permafrost: MAT < -1 degC (bool).
        wetness: wetness index 0..1 (wet climates, wetlands, permafrost).
        depth_to_bedrock_m: depth to bedrock, m (0.3..60).
        nbedrock: 1-based index of the deepest ``clm5_20`` layer above bedrock.
        soil_source: :data:`.soils.SOIL_SOURCES` code of each cell's topsoil (0 off land).
        soil_source_counts: source name -> number of ``mask`` cells.
        soil: :func:`.soils.derive_soil` output keyed ``<prop>_<depth cm>`` for depths 0, 30, 100:
            sand, silt, clay (%), texture (USDA class), oc (% weight), bd (kg m-3), wwp (vol %),
            cec (cmol(c) kg-1), ph (water), cfvo (vol %).
        bio: WorldClim ``BIO1``..``BIO19`` (degC, %, degC x 100 or mm; see :func:`.climate.bioclim`).
        npp_std: standard deviation of monthly NPP as an annual rate, g C m-2 yr-1.
        vegc: vegetation carbon NPP x land-cover residence time, g C m-2.
        wrb, usda_suborder: rule-based WRB reference group / USDA suborder proxy (1..15).
        r_horizon: probability of an R horizon within 2 m, %.
        acid_grade: sub-soil acidity grade 1..3 from pH at 30 cm.
        esa: ESA CCI top-level land-cover index 1..22.
        fpi_noise: smooth noise field (sigma 4 degrees) of the N-limitation scalar.
    """

    seed: int
    res: float
    mask: np.ndarray
    ref: np.ndarray
    t_air: np.ndarray
    p: np.ndarray
    pet: np.ndarray
    wet_rel: np.ndarray
    dtr: np.ndarray
    igbp: np.ndarray
    koppen: np.ndarray
    continent: np.ndarray
    country: np.ndarray
    npp: np.ndarray
    elevation: np.ndarray
    land_fraction: np.ndarray
    mat: np.ndarray
    map: np.ndarray
    mi: np.ndarray
    z_t: np.ndarray
    z_p: np.ndarray
    arid: np.ndarray
    z_relief: np.ndarray
    z_elev: np.ndarray
    permafrost: np.ndarray
    wetness: np.ndarray
    depth_to_bedrock_m: np.ndarray
    nbedrock: np.ndarray
    soil_source: np.ndarray
    soil_source_counts: Mapping[str, int]
    soil: Mapping[str, np.ndarray]
    bio: Mapping[str, np.ndarray]
    npp_std: np.ndarray
    vegc: np.ndarray
    wrb: np.ndarray
    usda_suborder: np.ndarray
    r_horizon: np.ndarray
    acid_grade: np.ndarray
    esa: np.ndarray
    fpi_noise: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(nlat, nlon) of the global grid."""
        return self.mask.shape  # type: ignore[return-value]

    def noise(self, name: str, sigma_deg: float) -> np.ndarray:
        """Smooth standard-normal field ``name`` on the global grid (same seed and grid as the world)."""
        return noise_field(self.seed, self.res, self.shape, name, sigma_deg)


def depth_to_bedrock(z_relief: np.ndarray, arid: np.ndarray, z_p: np.ndarray, igbp: np.ndarray,
                     noise: Callable[[str, float], np.ndarray]) -> np.ndarray:
    """Depth to bedrock, m: log-normal around ~10 m, clipped to 0.3..60 m.

    ln d = ln 10 - 0.55 z_relief - 0.35 clip(arid, -1, 3) + 0.25 clip(z_p, -2, 2) - 0.25 [barren]
    - 0.4 [snow/ice] + 0.55 eta_3deg + 0.2 eta_1deg: shallow in rugged terrain, deserts and
    ice-scoured shields; deep in lowland sediments and humid tropics. ``noise(name, sigma_deg)``
    gives the smooth fields eta.
    """
    logd = (
        np.log(10.0)
        - 0.55 * z_relief
        - 0.35 * np.clip(arid, -1, 3)
        + 0.25 * np.clip(z_p, -2, 2)
        - 0.25 * (igbp == 16)
        - 0.4 * (igbp == 15)
        + 0.55 * noise("bedrock", 3.0)
        + 0.2 * noise("bedrock_fine", 1.0)
    )
    return np.clip(np.exp(logd), 0.3, 60.0)


def wrb_group(soil: Mapping[str, np.ndarray], *, igbp: np.ndarray, permafrost: np.ndarray,
              depth_bedrock: np.ndarray, z_relief: np.ndarray, mat: np.ndarray, map_: np.ndarray,
              mi: np.ndarray) -> np.ndarray:
    """WRB reference soil group code 1..15 (:data:`.tables.WRB_GROUPS`), first rule that applies.

    Rule based on land cover, topsoil organic carbon and texture, permafrost, bedrock depth, relief,
    MAT (degC), MAP (mm yr-1), moisture index and pH at 30 cm; Cambisols otherwise.
    """
    sand0, clay0 = soil["sand_0"], soil["clay_0"]
    rules = [
        (igbp == 11) | (soil["oc_0"] >= HISTIC_OC_PCT),  # Histosols
        permafrost,  # Cryosols
        (depth_bedrock < 0.6) | (z_relief > 2.0),  # Leptosols
        sand0 > 70,  # Arenosols
        (mat > 20) & (map_ > 1600),  # Ferralsols
        (mat > 16) & (map_ > 900),  # Acrisols
        (mi < 0.35) & (soil["ph_30"] > 7.6),  # Calcisols
        (mat > -2) & (mat < 6) & (map_ > 450) & (sand0 > 40),  # Podzols
        (mat > 0) & (mat < 12) & (map_ > 400) & (map_ < 750) & ((igbp == 10) | (igbp == 12)),  # Chernozems
        (mat > 0) & (map_ > 250) & (map_ <= 400),  # Kastanozems
        clay0 > 45,  # Vertisols
        (mat > 4) & (mat < 16) & (map_ > 600),  # Luvisols
        mi > 2.0,  # Gleysols
        mi < 0.25,  # Regosols
    ]
    codes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 11, 14, 15]
    return np.select(rules, codes, default=12).astype(np.int16)  # Cambisols otherwise


def monthly_npp_std(npp: np.ndarray, t_air: np.ndarray, wet_rel: np.ndarray) -> np.ndarray:
    """S.d. of monthly NPP as an annual rate (g C m-2 yr-1), for ``cesm2_npp_std``.

    The annual total is spread over months by a growth index g = sigmoid((T - 5) / 3) x
    clip(wet_rel + 0.1, 0, 1) (evenly where g is 0 all year).
    """
    g = sigmoid((t_air - 5.0) / 3.0) * np.clip(wet_rel + 0.1, 0.0, 1.0)
    g_sum = g.sum(axis=0)
    npp_m = np.where(g_sum > 0, npp * g / np.where(g_sum > 0, g_sum, 1.0), npp / 12.0)
    return npp_m.std(axis=0) * 12.0


def derive_surface(base: xr.Dataset, seed: int = 0, exclude_antarctica: bool = True) -> Surface:
    """All 2-D (and monthly 2-D) derived fields on the base grid, globally (see :class:`Surface`).

    Smooth random fields and standardisations use the whole globe, so any region is an exact subset.
    """
    lat = base["lat"].values
    res = float(abs(lat[1] - lat[0]))
    shape = (lat.size, base["lon"].size)
    mask = land_mask(base, exclude_antarctica)
    ref = land_mask(base, True)  # standardisation reference: global land ex-Antarctica
    t = np.nan_to_num(base["tas"].values.astype(np.float64), nan=0.0)
    p = np.nan_to_num(base["pr"].values.astype(np.float64), nan=0.0)
    igbp = base["igbp"].values.astype(int)
    kg = base["koppen"].values.astype(int)
    elev = base["elevation"].values.astype(np.float64)
    lf = base["land_fraction"].values
    elev = np.where((elev < 0) & (lf < 0.99), 0.0, elev)  # coastal cells: the mean includes sea floor
    relief = base["elevation_std"].values.astype(np.float64)
    npp = np.nan_to_num(base["npp"].values.astype(np.float64), nan=0.0)

    def noise(name: str, sigma_deg: float) -> np.ndarray:
        return noise_field(seed, res, shape, name, sigma_deg)

    mat = t.mean(axis=0)
    map_ = p.sum(axis=0)
    pet = thornthwaite_pet(t, lat)
    wet_rel = bucket_wetness(p, pet)
    pet_a = pet.sum(axis=0)
    mi = map_ / np.maximum(pet_a, 50.0)  # moisture index P/PET (PET floor: cold deserts stay finite)

    # standardised drivers (global land reference)
    z_t = zscore(mat, ref)
    z_p = zscore(np.log(map_ + 10.0), ref)
    arid = -zscore(np.log(mi + 0.05), ref)  # > 0 = drier than the land average
    z_relief = zscore(np.log1p(relief), ref)
    z_elev = zscore(np.log1p(np.maximum(elev, 0.0)), ref)

    # permafrost (MAT < -1 degC) and a wetness index (wet climates, wetlands, permafrost)
    permafrost = mat < -1.0
    wet = np.clip((mi - 1.2) / 2.0, 0.0, 1.0)
    wet = np.where(igbp == 11, 1.0, wet)
    wet = np.where(permafrost, np.maximum(wet, 0.5), wet)

    depth_bedrock = depth_to_bedrock(z_relief, arid, z_p, igbp, noise)
    zi = get_grid(GRID_NAME).z_interface
    nbedrock = np.clip(np.searchsorted(zi, depth_bedrock, side="right"), 1, zi.size).astype(np.int32)

    # soil: HWSD v1.2 topsoil texture and organic carbon where it exists (fallbacks counted), the
    # deeper layers and the other soil properties derived from them by the pedotransfer relations
    # of derive_soil (deterministic: no random fields)
    top = topsoil_from_base(base, mask, res)
    tropical_humid = sigmoid(1.5 * z_t) * sigmoid(1.5 * z_p)
    soil = derive_soil(top["sand"], top["silt"], top["clay"], top["oc"], igbp=igbp, mi=mi, arid=arid,
                       tropical_humid=tropical_humid, z_relief=z_relief, depth_to_bedrock_m=depth_bedrock)

    # diurnal temperature range proxy (degC): large in dry, high, continental months
    dtr = np.clip(7.0 + 6.0 * np.exp(-p / 40.0) + 2.0 * np.clip(z_elev, -1, 2)[None], 3.0, 22.0)

    # WRB reference group and USDA suborder proxies, sub-soil acidity, ESA land cover
    wrb = wrb_group(soil, igbp=igbp, permafrost=permafrost, depth_bedrock=depth_bedrock, z_relief=z_relief,
                    mat=mat, map_=map_, mi=mi)
    ph_sub = soil["ph_30"]
    esa = IGBP_TO_ESA[igbp].copy()
    tundra = (kg == 29) & ((igbp == 7) | (igbp == 10))
    esa[tundra] = 14
    return Surface(
        seed=int(seed), res=res, mask=mask, ref=ref, t_air=t, p=p, pet=pet, wet_rel=wet_rel, dtr=dtr,
        igbp=igbp, koppen=kg, continent=base["continent"].values, country=base["country"].values,
        npp=npp, elevation=elev, land_fraction=lf, mat=mat, map=map_, mi=mi,
        z_t=z_t, z_p=z_p, arid=arid, z_relief=z_relief, z_elev=z_elev,
        permafrost=permafrost, wetness=wet, depth_to_bedrock_m=depth_bedrock, nbedrock=nbedrock,
        soil_source=top["source"], soil_source_counts=top["counts"], soil=soil, bio=bioclim(t, p, dtr),
        npp_std=monthly_npp_std(npp, t, wet_rel),  # expressed as an annual rate, g C m-2 yr-1
        vegc=npp * VEG_TAU_YR[igbp],
        wrb=wrb,
        usda_suborder=wrb.copy(),  # same ordering: USDA_SUBORDERS[i] is the proxy of WRB_GROUPS[i]
        r_horizon=100.0 * sigmoid((2.0 - depth_bedrock) / 0.6),
        acid_grade=np.select([ph_sub < 4.5, ph_sub < 5.5], [3, 2], default=1).astype(np.int16),
        esa=esa,
        fpi_noise=noise("fpi", 4.0),
    )


#: Units of the WorldClim variables BIO1..BIO11 (BIO15 is %, the other precipitation ones mm).
BIO_UNITS: dict[int, str] = {
    1: "degC",
    2: "degC",
    3: "%",
    4: "degC*100",
    5: "degC",
    6: "degC",
    7: "degC",
    8: "degC",
    9: "degC",
    10: "degC",
    11: "degC",
}
#: Long names of the WorldClim variables.
BIO_NAMES: dict[int, str] = {
    1: "annual mean temperature",
    2: "mean diurnal range (DTR proxy)",
    3: "isothermality (BIO2/BIO7 x 100)",
    4: "temperature seasonality (s.d. x 100)",
    5: "max temperature of the warmest month",
    6: "min temperature of the coldest month",
    7: "temperature annual range",
    8: "mean temperature of the wettest quarter",
    9: "mean temperature of the driest quarter",
    10: "mean temperature of the warmest quarter",
    11: "mean temperature of the coldest quarter",
    12: "annual precipitation",
    13: "precipitation of the wettest month",
    14: "precipitation of the driest month",
    15: "precipitation seasonality (CV)",
    16: "precipitation of the wettest quarter",
    17: "precipitation of the driest quarter",
    18: "precipitation of the warmest quarter",
    19: "precipitation of the coldest quarter",
}


def _soil_covariates(R: Callable[[np.ndarray], np.ndarray], soil: Mapping[str, np.ndarray]) -> dict[str, xr.Variable]:
    """Texture, organic carbon, bulk density, CEC, pH, coarse fragments and wilting point at 0, 30, 100 cm."""
    LL = ("lat", "lon")
    v: dict[str, xr.Variable] = {}
    top = "HWSD v1.2 topsoil (0-30 cm; fallbacks in soil_source)"
    for d in SOIL_DEPTHS_CM:
        tex = top if d == 0 else "from the HWSD topsoil texture, clay enriched with depth"
        ptf = "HWSD texture and organic carbon"
        v[f"Bulk_Density_{d}cm"] = nc_var(LL, R(soil[f"bd_{d}"]), "kg m-3", f"fine-earth bulk density at {d} cm "
                                          f"(Adams 1973 mixture, Saxton & Rawls 2006 mineral density; {ptf})")
        v[f"CEC_{d}cm"] = nc_var(LL, R(soil[f"cec_{d}"]), "cmol(c) kg-1",
                                 f"cation exchange capacity at {d} cm (from clay and organic matter; {ptf})")
        v[f"Clay_Content_{d}cm"] = nc_var(LL, R(soil[f"clay_{d}"]), "%", f"clay mass fraction at {d} cm ({tex})")
        v[f"Coarse_Fragments_v_{d}cm"] = nc_var(
            LL, R(soil[f"cfvo_{d}"]), "%", f"coarse fragments, volumetric, at {d} cm (synthetic: relief, aridity, "
            "bedrock depth, sand)"
        )
        v[f"pH_Water_{d}cm"] = nc_var(
            LL, R(soil[f"ph_{d}"]), "1", f"soil pH in water at {d} cm (derived from the climatic water balance and "
            "organic carbon; pH units, not x10)"
        )
        v[f"Sand_Content_{d}cm"] = nc_var(LL, R(soil[f"sand_{d}"]), "%", f"sand mass fraction at {d} cm ({tex})")
        v[f"Silt_Content_{d}cm"] = nc_var(LL, R(soil[f"silt_{d}"]), "%", f"silt mass fraction at {d} cm ({tex})")
        v[f"SWC_v_Wilting_Point_{d}cm"] = nc_var(
            LL, R(soil[f"wwp_{d}"]), "%", f"volumetric water content at wilting point at {d} cm "
            f"(Saxton & Rawls 2006; {ptf})"
        )
        v[f"Organic_Carbon_{d}cm"] = nc_var(
            LL, R(10.0 * soil[f"oc_{d}"]), "g kg-1", f"soil organic carbon content at {d} cm "
            f"({top if d == 0 else 'HWSD topsoil x a Jobbagy & Jackson 2000 depth profile'}); not a network covariate"
        )
        v[f"Texture_USDA_{d}cm"] = nc_var(
            LL,
            R(soil[f"texture_{d}"]),
            "1",
            f"USDA texture class at {d} cm",
            categorical=1,
            flag_values=np.arange(1, 13, dtype=np.int16),
            flag_meanings=" ".join(USDA_TEXTURE),
        )
    return v


def _soil_class_covariates(R: Callable[[np.ndarray], np.ndarray], s: Surface) -> dict[str, xr.Variable]:
    """Sub-soil acidity grade, R-horizon probability and the USDA suborder / WRB group proxies."""
    LL = ("lat", "lon")
    v: dict[str, xr.Variable] = {}
    v["Garde_Acid"] = nc_var(
        LL,
        R(s.acid_grade),
        "1",
        "grade of sub-soil acidity from pH at 30 cm (1: >= 5.5, 2: 4.5-5.5, 3: < 4.5)",
        categorical=1,
        flag_values=np.array([1, 2, 3], dtype=np.int16),
        flag_meanings="not_acid moderately_acid strongly_acid",
    )
    v["Occurrence_R_Horizon"] = nc_var(
        LL, R(s.r_horizon), "%", "probability of an R horizon within 2 m (from depth to bedrock)"
    )
    v["USDA_Suborder"] = nc_var(
        LL,
        R(s.usda_suborder),
        "1",
        "USDA soil suborder (rule-based proxy)",
        categorical=1,
        flag_values=np.arange(1, 16, dtype=np.int16),
        flag_meanings=" ".join(USDA_SUBORDERS),
    )
    v["WRB_Subgroup"] = nc_var(
        LL,
        R(s.wrb),
        "1",
        "WRB reference soil group (rule-based proxy)",
        categorical=1,
        flag_values=np.arange(1, 16, dtype=np.int16),
        flag_meanings=" ".join(WRB_GROUPS),
    )
    return v


def covariate_dataset(
    s: Surface,
    sl: tuple[slice, slice],
    mask: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    cell_area: np.ndarray,
    attrs: dict[str, Any],
) -> xr.Dataset:
    """The ``covariates.nc`` dataset of the region ``sl`` (row, column slices of the global grid).

    :data:`COVARIATE_NAMES` (spec section (m)) plus ``Organic_Carbon_*``, ``continent``, ``cell_area``
    (m2), ``land_fraction``, ``soil_source`` and ``country``; NaN (written as the fill value) off
    ``mask``, the region's land cells. ``cell_area`` holds the region's latitude rows (m2).
    """

    def R(a: np.ndarray) -> np.ndarray:
        return np.where(mask, np.asarray(a)[sl], np.nan).astype(np.float32)

    LL = ("lat", "lon")
    lon2, lat2 = np.meshgrid(lon, lat)
    v: dict[str, xr.Variable] = {
        "Lon": nc_var(
            LL, np.where(mask, lon2, np.nan).astype(np.float32), "degrees_east", "longitude of the cell centre"
        ),
        "Lat": nc_var(
            LL, np.where(mask, lat2, np.nan).astype(np.float32), "degrees_north", "latitude of the cell centre"
        ),
        "ESA_Land_Cover": nc_var(
            LL,
            R(s.esa),
            "1",
            "land cover as ESA CCI top-level class index 1..22, mapped from MODIS IGBP",
            categorical=1,
            flag_values=np.arange(1, 23, dtype=np.int16),
            flag_meanings=" ".join(ESA_CLASSES),
            comment="mapping: "
            + ", ".join(f"IGBP {i}->{int(c)}" for i, c in enumerate(IGBP_TO_ESA))
            + "; tundra (ET) shrub/grass -> 14",
        ),
    }
    for i in range(1, 20):
        units = BIO_UNITS.get(i, "%" if i == 15 else "mm")
        v[f"BIO{i}"] = nc_var(LL, R(s.bio[f"BIO{i}"]), units, f"WorldClim BIO{i}: {BIO_NAMES[i]}")
    v["Abs_Depth_to_Bedrock"] = nc_var(
        LL, R(100.0 * s.depth_to_bedrock_m), "cm", "absolute depth to bedrock (synthetic)"
    )
    v.update(_soil_covariates(R, s.soil))
    v.update(_soil_class_covariates(R, s))
    v["Elevation"] = nc_var(LL, R(s.elevation), "m", "mean surface elevation (ETOPO5)")
    v["Koppen_Climate_2018"] = nc_var(
        LL,
        R(s.koppen),
        "1",
        "Koppen-Geiger class, Beck et al. 2018 legend codes",
        categorical=1,
        flag_values=np.arange(1, 31, dtype=np.int16),
        flag_meanings=" ".join(BECK_CLASSES),
    )
    v["cesm2_npp"] = nc_var(LL, R(s.npp), "gC/m^2/yr", "net primary production (Miami model stand-in for CESM2 NPP)")
    v["cesm2_npp_std"] = nc_var(LL, R(s.npp_std), "gC/m^2/yr", "standard deviation of monthly NPP, as an annual rate")
    v["cesm2_vegc"] = nc_var(LL, R(s.vegc), "gC/m^2", "vegetation carbon (NPP x land-cover residence time)")
    v["nbedrock"] = nc_var(LL, R(s.nbedrock), "1", "index of the deepest soil layer above bedrock (1-based, clm5_20)")
    v["continent"] = nc_var(
        LL,
        R(s.continent),
        "1",
        "continent",
        categorical=1,
        flag_values=np.array(list(CONTINENTS), dtype=np.int16),
        flag_meanings=" ".join(CONTINENTS.values()),
    )
    v["cell_area"] = nc_var(
        LL, np.where(mask, cell_area[:, None] * np.ones((1, lon.size)), np.nan), "m2", "cell area on the sphere"
    )
    v["land_fraction"] = nc_var(LL, R(s.land_fraction), "1", "land fraction (GLOBE)")
    v["soil_source"] = nc_var(
        LL,
        R(s.soil_source),
        "1",
        "source of the topsoil texture and organic carbon (HWSD v1.2, or the counted fallback)",
        categorical=1,
        flag_values=np.array(list(SOIL_SOURCES), dtype=np.int16),
        flag_meanings=" ".join(SOIL_SOURCES.values()),
        comment="land cells of the whole world by source: " + json.dumps(dict(s.soil_source_counts)),
    )
    ds = xr.Dataset(
        v,
        coords={"lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs=attrs,
    )
    # added after the coordinates, so the file keeps its variable order (lat, lon before country)
    country = np.where(mask, s.country[sl], 0).astype(np.int16)
    ds["country"] = nc_var(LL, country, "1", "ISO 3166-1 numeric country id (Natural Earth)", categorical=1)
    return ds


#: Covariate names of spec section (m), in order, all provided by the world.
COVARIATE_NAMES: tuple[str, ...] = (
    "Lon",
    "Lat",
    "ESA_Land_Cover",
    *[f"BIO{i}" for i in range(1, 20)],
    "Abs_Depth_to_Bedrock",
    *[f"Bulk_Density_{d}cm" for d in SOIL_DEPTHS_CM],
    *[f"CEC_{d}cm" for d in SOIL_DEPTHS_CM],
    *[f"Clay_Content_{d}cm" for d in SOIL_DEPTHS_CM],
    *[f"Coarse_Fragments_v_{d}cm" for d in SOIL_DEPTHS_CM],
    "Garde_Acid",
    "Occurrence_R_Horizon",
    *[f"pH_Water_{d}cm" for d in SOIL_DEPTHS_CM],
    *[f"Sand_Content_{d}cm" for d in SOIL_DEPTHS_CM],
    *[f"Silt_Content_{d}cm" for d in SOIL_DEPTHS_CM],
    *[f"SWC_v_Wilting_Point_{d}cm" for d in SOIL_DEPTHS_CM],
    *[f"Texture_USDA_{d}cm" for d in SOIL_DEPTHS_CM],
    "USDA_Suborder",
    "WRB_Subgroup",
    "Elevation",
    "Koppen_Climate_2018",
    "cesm2_npp",
    "cesm2_npp_std",
    "cesm2_vegc",
    "nbedrock",
)
CATEGORICAL_COVARIATES: tuple[str, ...] = (
    "ESA_Land_Cover",
    "Garde_Acid",
    *[f"Texture_USDA_{d}cm" for d in SOIL_DEPTHS_CM],
    "USDA_Suborder",
    "WRB_Subgroup",
    "Koppen_Climate_2018",
)
