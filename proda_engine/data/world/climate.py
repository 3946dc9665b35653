"""Climate helpers on monthly climatologies: day length, Thornthwaite PET, a bucket soil-water model,
WorldClim BIO1..BIO19 and the damped, lagged soil temperature profile (heat conduction).

Pure array functions (no files, no random fields); the world's forcing (:mod:`.forcing`) and
covariates (:mod:`.covariates`) are built from them.
"""

from __future__ import annotations

import numpy as np

from proda_engine.data.world.tables import DAYS_IN_MONTH, MID_MONTH_DOY


def day_length_hours(lat_deg: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Astronomical day length, hours, (12, nlat) for mid-month days ``doy`` (Cooper's declination)."""
    decl = np.deg2rad(23.44) * np.sin(2 * np.pi * (284 + np.asarray(doy)[:, None]) / 365.0)
    x = -np.tan(np.deg2rad(lat_deg))[None, :] * np.tan(decl)
    return 24.0 / np.pi * np.arccos(np.clip(x, -1.0, 1.0))


def thornthwaite_pet(t_c: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    """Thornthwaite (1948) potential evapotranspiration, mm/month, for monthly T (12, nlat, nlon) degC.

    PET = 16 (N/12)(d/30)(10 T / I)^a for 0 < T <= 26.5 degC with heat index I = sum (T/5)^1.514 and
    a = 6.75e-7 I^3 - 7.71e-5 I^2 + 1.792e-2 I + 0.49239; above 26.5 degC Willmott's form
    -415.85 + 32.24 T - 0.43 T^2; 0 when T <= 0.
    """
    tp = np.maximum(t_c, 0.0)
    heat = ((tp / 5.0) ** 1.514).sum(axis=0)
    a = 6.75e-7 * heat**3 - 7.71e-5 * heat**2 + 1.792e-2 * heat + 0.49239
    n = day_length_hours(lat_deg, MID_MONTH_DOY)[:, :, None]
    corr = (n / 12.0) * (DAYS_IN_MONTH[:, None, None] / 30.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        base = np.where(heat > 0, 16.0 * (10.0 * tp / np.where(heat > 0, heat, 1.0)) ** a, 0.0)
    hot = -415.85 + 32.24 * t_c - 0.43 * t_c**2
    pet = np.where(t_c > 26.5, hot, base) * corr
    return np.where(t_c > 0, np.maximum(pet, 0.0), 0.0)


def bucket_wetness(p_mm: np.ndarray, pet_mm: np.ndarray, smax: float = 150.0, years: int = 4) -> np.ndarray:
    """Relative soil-water storage S/Smax at the end of each month (12, ...) of a simple bucket.

    Evapotranspiration is PET scaled by storage (beta = min(1, 1.33 S/Smax)); the bucket is spun
    up for ``years`` repeats of the climatology from half full. Drainage is the overflow above Smax.
    """
    s = np.full(p_mm.shape[1:], 0.5 * smax)
    out = np.empty_like(p_mm)
    for _ in range(years):
        for m in range(12):
            avail = s + p_mm[m]
            et = np.minimum(pet_mm[m] * np.minimum(1.0, 1.33 * avail / smax), avail)
            s = np.minimum(avail - et, smax)
            out[m] = s / smax
    return out


def bioclim(t_c: np.ndarray, p_mm: np.ndarray, dtr_c: np.ndarray) -> dict[str, np.ndarray]:
    """WorldClim BIO1..BIO19 from monthly mean T (degC), precipitation (mm) and diurnal range (degC).

    Monthly Tmax/Tmin are T +- DTR/2 (the base world has no Tmax/Tmin: DTR is a documented proxy).
    Quarters are 3 consecutive months, wrapping around the year. BIO4 = 100 x s.d. of monthly T;
    BIO15 = coefficient of variation (%) of monthly P (with 1 mm added to the mean, as WorldClim).
    """
    tmax, tmin = t_c + dtr_c / 2, t_c - dtr_c / 2
    idx = (np.arange(12)[:, None] + np.arange(3)[None, :]) % 12  # (12 quarters, 3 months)
    tq = t_c[idx].mean(axis=1)
    pq = p_mm[idx].sum(axis=1)

    def pick(q: np.ndarray, by: np.ndarray, how: str) -> np.ndarray:
        k = np.argmax(by, axis=0) if how == "max" else np.argmin(by, axis=0)
        return np.take_along_axis(q, k[None], axis=0)[0]

    b: dict[str, np.ndarray] = {}
    b["BIO1"] = t_c.mean(axis=0)
    b["BIO2"] = dtr_c.mean(axis=0)
    b["BIO5"] = tmax.max(axis=0)
    b["BIO6"] = tmin.min(axis=0)
    b["BIO7"] = b["BIO5"] - b["BIO6"]
    b["BIO3"] = 100.0 * b["BIO2"] / np.maximum(b["BIO7"], 1e-6)
    b["BIO4"] = 100.0 * t_c.std(axis=0)
    b["BIO8"] = pick(tq, pq, "max")
    b["BIO9"] = pick(tq, pq, "min")
    b["BIO10"] = tq.max(axis=0)
    b["BIO11"] = tq.min(axis=0)
    b["BIO12"] = p_mm.sum(axis=0)
    b["BIO13"] = p_mm.max(axis=0)
    b["BIO14"] = p_mm.min(axis=0)
    b["BIO15"] = 100.0 * p_mm.std(axis=0, ddof=1) / (1.0 + p_mm.mean(axis=0))
    b["BIO16"] = pq.max(axis=0)
    b["BIO17"] = pq.min(axis=0)
    b["BIO18"] = pick(pq, tq, "max")
    b["BIO19"] = pick(pq, tq, "min")
    return {f"BIO{i}": b[f"BIO{i}"] for i in range(1, 20)}


def soil_temperature(t_air: np.ndarray, p: np.ndarray, wet_mean: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Monthly soil temperature per layer, degC, (12, L, C), from air temperature (12, C).

    The surface follows the air, with winter cold damped by snow (x0.7 in months below 0 degC with
    > 10 mm precipitation). Each Fourier harmonic k of the annual cycle is damped by exp(-z/d_k) and
    lagged by z/d_k radians, with d_k = d_1/sqrt(k) (heat conduction); d_1 = 2 + 1 x wetness m
    (wetter soils conduct better). Deep layers tend to the annual mean.
    """
    ts = np.where((t_air < 0) & (p > 10.0), 0.7 * t_air, t_air)
    spec = np.fft.rfft(ts, axis=0)  # (7, C)
    k = np.arange(spec.shape[0])[:, None, None]  # (7, 1, 1)
    d1 = (2.0 + 1.0 * np.clip(wet_mean, 0, 1))[None, None, :]
    dk = d1 / np.sqrt(np.maximum(k, 1))
    zz = z[None, :, None]
    damp = np.where(k == 0, 1.0, np.exp(-zz / dk) * np.exp(-1j * zz / dk))  # (7, L, C)
    return np.fft.irfft(spec[:, None, :] * damp, n=12, axis=0)
