"""Soil of the world: HWSD v1.2 topsoil with counted fallbacks, and the documented pedotransfer
relations that derive texture, organic carbon, bulk density, wilting point, CEC, pH and coarse
fragments at 0, 30 and 100 cm from it (Saxton & Rawls 2006, Adams 1973, Jobbagy & Jackson 2000).

The constants of those relations are module-level tables, so ``docs/world.md`` and the tests can cite
them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from proda_engine.data.world.base import sigmoid
from proda_engine.data.world.tables import HWSD_FIELDS, SOIL_DEPTHS_CM


def usda_texture_class(sand: np.ndarray, silt: np.ndarray, clay: np.ndarray) -> np.ndarray:
    """USDA texture class code 1..12 (:data:`USDA_TEXTURE` order, SoilGrids TEXMHT) from percentages."""
    conds = [
        silt + 1.5 * clay < 15,  # sand
        (silt + 1.5 * clay >= 15) & (silt + 2 * clay < 30),  # loamy sand
        (clay >= 40) & (silt >= 40),  # silty clay
        (clay >= 35) & (sand >= 45),  # sandy clay
        (clay >= 40) & (sand < 45) & (silt < 40),  # clay
        (clay >= 27) & (clay < 40) & (sand <= 20),  # silty clay loam
        (clay >= 27) & (clay < 40) & (sand > 20) & (sand <= 45),  # clay loam
        (clay >= 20) & (clay < 35) & (silt < 28) & (sand > 45),  # sandy clay loam
        (silt >= 80) & (clay < 12),  # silt
        ((silt >= 50) & (clay >= 12) & (clay < 27)) | ((silt >= 50) & (silt < 80) & (clay < 12)),  # silt loam
        (clay >= 7) & (clay < 27) & (silt >= 28) & (silt < 50) & (sand <= 52),  # loam
    ]
    codes = [12, 11, 2, 3, 1, 5, 4, 6, 10, 8, 7]
    return np.select(conds, codes, default=9).astype(np.int16)  # remaining: sandy loam


#: ``soil_source`` codes: where each land cell's topsoil comes from.
SOIL_SOURCES: dict[int, str] = {
    1: "hwsd",  # the HWSD value of the cell
    2: "hwsd_nearest",  # nearest HWSD cell within NEAREST_SOIL_DEG (coasts, small islands)
    3: "hwsd_class_mean",  # HWSD mean of the same Koppen class and IGBP land cover
    4: "hwsd_landcover_mean",  # HWSD mean of the same IGBP land cover
    5: "hwsd_global_mean",  # HWSD mean of all soil cells
}
#: Largest distance (degrees, in grid steps) over which a land cell borrows the nearest HWSD cell.
NEAREST_SOIL_DEG = 1.5
#: A (Koppen, IGBP) class needs this many HWSD cells for its mean to serve as a fallback.
MIN_CLASS_CELLS = 5
#: Organic carbon of histic (peat) material, % weight (WRB: >= 20 % organic matter ~ 12 % OC).
HISTIC_OC_PCT = 12.0
#: van Bemmelen factor: organic matter = 1.724 x organic carbon.
OM_PER_OC = 1.724
#: Bulk density of organic matter (Adams 1973), g cm-3.
BD_ORGANIC = 0.224
#: Texture log-ratio shifts with depth (sand, silt, clay) at 30 and 100 cm: clay illuviation.
TEXTURE_DEPTH_SHIFT: dict[int, tuple[float, float, float]] = {
    0: (0.0, 0.0, 0.0), 30: (-0.055, 0.0, 0.165), 100: (-0.088, 0.0, 0.275)}
#: Vertical SOC shape rho(z) = (1 - c) exp(-z / z_s) + c (Jobbagy & Jackson 2000; fitted in
#: ../shared/guides/offline-geodata.md section 4.4) per profile type: (z_s m, c).
SOC_PROFILE_SHAPES: dict[str, tuple[float, float]] = {
    "forest": (0.213, 0.075), "grassland": (0.336, 0.071), "shrubland": (0.460, 0.176)}
#: Profile type per IGBP class 0..16 (water, ENF, EBF, DNF, DBF, mixed, closed shrub, open shrub,
#: woody savanna, savanna, grassland, wetland, cropland, urban, mosaic, snow/ice, barren).
IGBP_PROFILE = ("grassland", "forest", "forest", "forest", "forest", "forest", "shrubland", "shrubland",
                "forest", "grassland", "grassland", "grassland", "grassland", "grassland", "grassland",
                "shrubland", "shrubland")
#: OC relative to the topsoil (0-30 cm) mean at 30 and 100 cm in peat (organic matter keeps to depth).
PEAT_OC_RATIO = {30: 1.0, 100: 0.8}
#: Subsoil compaction added to the mineral bulk density at 30 and 100 cm, g cm-3.
BD_COMPACTION = {0: 0.0, 30: 0.08, 100: 0.14}


def soc_profile_ratio(depth_m: float, z_s: float, c: float, top_m: float = 0.3) -> float:
    """rho(depth) / mean of rho over 0..top_m for rho(z) = (1 - c) exp(-z / z_s) + c (dimensionless)."""
    mean_top = (1.0 - c) * z_s / top_m * (1.0 - np.exp(-top_m / z_s)) + c
    return float(((1.0 - c) * np.exp(-depth_m / z_s) + c) / mean_top)


def saxton_rawls(sand: np.ndarray, clay: np.ndarray, om: np.ndarray) -> dict[str, np.ndarray]:
    """Saxton & Rawls (2006) pedotransfer functions (SSSAJ 70:1569, Table 1, equations 1-5).

    Args: sand and clay (%), organic matter OM (% weight; their fit covers OM <= 8 %, so OM is
    clipped there). Returns volumetric water contents (m3 m-3) at -1500 kPa (``theta_1500``, the
    wilting point), at -33 kPa (``theta_33``) and at saturation (``theta_s``), and the normal
    (uncompacted) bulk density ``rho_n = (1 - theta_s) x 2.65`` (g cm-3).

    >>> round(float(saxton_rawls(np.array(40.0), np.array(20.0), np.array(2.5))["theta_1500"]), 3)
    0.139
    """
    s, c = np.asarray(sand, float) / 100.0, np.asarray(clay, float) / 100.0
    o = np.clip(np.asarray(om, float), 0.0, 8.0)
    t1500 = -0.024 * s + 0.487 * c + 0.006 * o + 0.005 * s * o - 0.013 * c * o + 0.068 * s * c + 0.031
    t33 = -0.251 * s + 0.195 * c + 0.011 * o + 0.006 * s * o - 0.027 * c * o + 0.452 * s * c + 0.299
    ts33 = 0.278 * s + 0.034 * c + 0.022 * o - 0.018 * s * o - 0.027 * c * o - 0.584 * s * c + 0.078
    theta_1500 = t1500 + (0.14 * t1500 - 0.02)
    theta_33 = t33 + (1.283 * t33**2 - 0.374 * t33 - 0.015)
    theta_s33 = ts33 + (0.636 * ts33 - 0.107)
    theta_s = theta_33 + theta_s33 - 0.097 * s + 0.043
    return {"theta_1500": theta_1500, "theta_33": theta_33, "theta_s": theta_s, "rho_n": (1.0 - theta_s) * 2.65}


def adams_bulk_density(oc: np.ndarray, rho_mineral: np.ndarray) -> np.ndarray:
    """Bulk density (g cm-3) of a mineral-organic mixture (Adams 1973, J. Soil Sci. 24:10):
    BD = 1 / (f_om / 0.224 + (1 - f_om) / rho_mineral), with f_om = 1.724 OC / 100 (OC in % weight).

    >>> round(float(adams_bulk_density(np.array(1.0), np.array(1.5))), 3)
    1.39
    """
    f_om = np.clip(OM_PER_OC * np.asarray(oc, float) / 100.0, 0.0, 1.0)
    return 1.0 / (f_om / BD_ORGANIC + (1.0 - f_om) / np.asarray(rho_mineral, float))


def topsoil_from_base(base: xr.Dataset, mask: np.ndarray, res: float) -> dict[str, Any]:
    """Topsoil (0-30 cm) sand, silt, clay and organic carbon (%) on every cell of the base grid.

    HWSD v1.2 (``hwsd_*`` of the base file) where it has soil. Land cells without (ice sheets,
    shifting sand, rock outcrop, slivers of coast) fall back, in order, to the nearest HWSD cell
    within :data:`NEAREST_SOIL_DEG` (grid steps), the area-weighted HWSD mean of cells of the same
    Koppen class and IGBP land cover (>= :data:`MIN_CLASS_CELLS` cells), of the same land cover, and of
    all cells. Returns the four fields, ``source`` (:data:`SOIL_SOURCES` codes; 0 off land) and
    ``counts`` (source name -> number of ``mask`` cells). Texture is renormalised to sum to 100.
    """
    missing = [v for v in HWSD_FIELDS if v not in base]
    if missing:
        raise ValueError(f"base world lacks {missing}: rebuild it with scripts/build_base_world.py (HWSD topsoil)")
    vals = np.stack([np.asarray(base[v].values, dtype=np.float64) for v in HWSD_FIELDS])  # (4, lat, lon)
    has = np.isfinite(vals).all(axis=0) & (vals[:3].sum(axis=0) > 0)
    land = base["land_fraction"].values > 0
    source = np.where(has & land, 1, 0).astype(np.int8)
    out = np.where(has[None], vals, np.nan)

    need = land & ~has
    if need.any() and has.any():
        dist, (ii, jj) = ndimage.distance_transform_edt(~has, return_indices=True)
        near = need & (dist <= NEAREST_SOIL_DEG / res + 1e-9)
        out[:, near] = vals[:, ii[near], jj[near]]
        source[near] = 2
        need &= ~near
    if need.any():
        w = base["cell_area"].values[:, None] * np.ones(has.shape)
        kg = base["koppen"].values.astype(np.int64)
        lc = base["igbp"].values.astype(np.int64)

        def class_means(key: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, int]]:
            k = key[has]
            uniq, inv = np.unique(k, return_inverse=True)
            ww = w[has]
            den = np.bincount(inv, weights=ww)
            means = np.stack([np.bincount(inv, weights=ww * vals[i][has]) / den for i in range(4)], axis=1)
            n = np.bincount(inv)
            return dict(zip(uniq.tolist(), means)), dict(zip(uniq.tolist(), n.tolist()))

        for code, key in ((3, kg * 100 + lc), (4, lc)):
            means, n = class_means(key)
            cells = np.argwhere(need)
            for i, j in cells:
                kk = int(key[i, j])
                if n.get(kk, 0) >= MIN_CLASS_CELLS:
                    out[:, i, j] = means[kk]
                    source[i, j] = code
                    need[i, j] = False
        if need.any():
            ww = w[has]
            out[:, need] = (np.stack([(ww * vals[i][has]).sum() / ww.sum() for i in range(4)]))[:, None]
            source[need] = 5
    tex = out[:3] / out[:3].sum(axis=0) * 100.0
    counts = {name: int(((source == code) & mask).sum()) for code, name in SOIL_SOURCES.items()}
    return {"sand": tex[0], "silt": tex[1], "clay": tex[2], "oc": out[3], "source": source, "counts": counts}


def derive_soil(sand0: np.ndarray, silt0: np.ndarray, clay0: np.ndarray, oc0: np.ndarray, *, igbp: np.ndarray,
                mi: np.ndarray, arid: np.ndarray, tropical_humid: np.ndarray, z_relief: np.ndarray,
                depth_to_bedrock_m: np.ndarray) -> dict[str, np.ndarray]:
    """Soil properties at 0, 30 and 100 cm from topsoil texture and organic carbon (all deterministic).

    * **Texture** (%): 0 cm = the topsoil values; deeper, the log-ratios shift by
      :data:`TEXTURE_DEPTH_SHIFT` (clay enrichment, e^0.275 = x1.3 at 100 cm before closure), closed to
      100 again, so the fractions stay positive and sum to 100. ``texture`` = USDA class.
    * **Organic carbon** ``oc`` (% weight): 0 cm = topsoil; deeper, x rho(z) / mean rho(0-30 cm) of the
      Jobbagy & Jackson (2000) profile of the cell's vegetation (:data:`SOC_PROFILE_SHAPES`,
      :data:`IGBP_PROFILE`; forest 0.53 / 0.15, grassland 0.66 / 0.17, shrubland 0.77 / 0.35), blended
      toward :data:`PEAT_OC_RATIO` with w = clip((OC - 8) / 10, 0, 1) in organic soils.
    * **Bulk density** ``bd`` (kg m-3): Adams (1973) mixture of organic matter (0.224 g cm-3) and the
      Saxton & Rawls (2006) normal mineral density at OM = 0, plus :data:`BD_COMPACTION`.
    * **Wilting point** ``wwp`` (vol %): Saxton & Rawls (2006) theta at -1500 kPa (OM clipped to 8 %).
    * **CEC** (cmol(c) kg-1): (0.5 - 0.3 h) clay + 2 OM + 1, h = humid-tropics index (low-activity
      kaolinitic clays); ~0.5 cmol per % of 2:1 clay and ~2 per % organic matter (Helling et al. 1964).
    * **pH** (water): water balance (Slessarev et al. 2016: alkaline where P < PET, acid where P > PET)
      5.0 + 3.0 sigmoid(-ln(MI) / 0.25) - 0.4 h - 0.04 min(OC, 40), + 0.15 / 0.30 at 30 / 100 cm (x1.5 in
      drylands), clipped to 3.5..9.5.
    * **Coarse fragments** ``cfvo`` (vol %, synthetic: no real source): 60 sigmoid(-2.6 + 0.7 z_relief
      + 0.35 aridity + 1.2 shallow + 0.5 (sand - 50)/50 + 0.25 / 0.5 at 30 / 100 cm),
      shallow = sigmoid((1.5 m - depth to bedrock) / 0.5 m).
    """
    comp0 = np.stack([sand0, silt0, clay0])
    shallow = sigmoid((1.5 - depth_to_bedrock_m) / 0.5)
    lc = np.clip(np.asarray(igbp, dtype=np.int64), 0, len(IGBP_PROFILE) - 1)
    out: dict[str, np.ndarray] = {}
    for depth_cm in SOIL_DEPTHS_CM:
        if depth_cm == 0:
            comp = comp0
        else:
            shift = np.asarray(TEXTURE_DEPTH_SHIFT[depth_cm]).reshape((3,) + (1,) * (comp0.ndim - 1))
            e = comp0 * np.exp(shift)  # = softmax(log composition + shift): a log-ratio shift, closed to 100
            comp = 100.0 * e / e.sum(axis=0)
        sand, silt, clay = comp
        out[f"sand_{depth_cm}"], out[f"silt_{depth_cm}"], out[f"clay_{depth_cm}"] = sand, silt, clay
        out[f"texture_{depth_cm}"] = usda_texture_class(sand, silt, clay)
        if depth_cm == 0:
            oc = np.asarray(oc0, dtype=np.float64)
        else:
            lut = np.array([soc_profile_ratio(depth_cm / 100.0, *SOC_PROFILE_SHAPES[t]) for t in IGBP_PROFILE])
            peat = np.clip((oc0 - 8.0) / 10.0, 0.0, 1.0)
            oc = oc0 * ((1.0 - peat) * lut[lc] + peat * PEAT_OC_RATIO[depth_cm])
        out[f"oc_{depth_cm}"] = oc
        om = OM_PER_OC * oc
        rho_min = saxton_rawls(sand, clay, np.zeros_like(sand))["rho_n"] + BD_COMPACTION[depth_cm]
        out[f"bd_{depth_cm}"] = np.clip(1000.0 * adams_bulk_density(oc, rho_min), 100.0, 1900.0)
        out[f"wwp_{depth_cm}"] = np.clip(100.0 * saxton_rawls(sand, clay, om)["theta_1500"], 1.0, 45.0)
        out[f"cec_{depth_cm}"] = np.clip((0.5 - 0.3 * tropical_humid) * clay + 2.0 * om + 1.0, 1.0, 150.0)
        dry = 1.0 + 0.5 * (arid > 0)
        ph_add = {0: 0.0, 30: 0.15, 100: 0.3}[depth_cm]
        out[f"ph_{depth_cm}"] = np.clip(
            5.0 + 3.0 * sigmoid(-np.log(np.maximum(mi, 1e-3)) / 0.25) - 0.4 * tropical_humid
            - 0.04 * np.minimum(oc, 40.0) + ph_add * dry, 3.5, 9.5)
        cf_add = {0: 0.0, 30: 0.25, 100: 0.5}[depth_cm]
        out[f"cfvo_{depth_cm}"] = 60.0 * sigmoid(
            -2.6 + 0.7 * z_relief + 0.35 * np.clip(arid, -2, 3) + 1.2 * shallow + 0.5 * (sand - 50.0) / 50.0 + cf_add)
    return out
