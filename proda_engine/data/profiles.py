"""Soil-profile readers: WoSIS 2019, WoSIS 2023 and tidy CSV -> :class:`ProfileSet` (data contract §3).

SOC density (g C m-3) = orgc (g kg-1) x bulk density (kg dm-3) x (1 - cfvo/100) x 1000, placed at the
layer's mid-depth in metres. Every dropped layer and profile is counted by reason in a
:class:`SkipReport`, together with the file each reason came from; structural problems (missing
required column, unreadable file) raise :class:`~proda_engine.data.errors.ProfileError`.

Layer checks, in order (the first that applies is the layer's reason):

==========================  =========================================================
reason                      meaning
==========================  =========================================================
``duplicate_layer``         same layer key seen again in the same table (first kept)
``missing_depth``           upper or lower depth empty
``non_numeric_depth``       upper or lower depth not a number
``litter_layer``            ``litter`` flag true (WoSIS flags pre-1993 negative depths too)
``negative_depth``          upper or lower depth < 0 without a litter flag
``lower_not_below_upper``   lower depth <= upper depth
``non_numeric_value``       orgc, bulk density, cfvo or SOC present but not a number
``missing_orgc``            no organic carbon value
``missing_bulk_density``    none of bdfiod, bdfi33, bdws33
``missing_soc``             (tidy CSV) no SOC density
``out_of_range_value``      orgc < 0 or > 1000 g/kg, bulk density not in (0, 3] kg/dm3,
                            cfvo not in [0, 100] %, SOC density < 0
``soc_zero``                SOC density is exactly 0 (dropped as in the original, spec §(k))
==========================  =========================================================

Then per profile: ``no_profile_record`` (layers whose profile is not in the profiles table),
``invalid_coordinates`` (latitude/longitude missing, non-numeric or out of range) and
``fewer_than_two_layers``; the still-valid layers of a dropped profile are counted as
``profile_<reason>``. Notes (kept layers, not drops): ``cfvo_missing_assumed_zero``,
``bulk_density_from_bdfi33``, ``bulk_density_from_bdws33``, ``multi_value_averaged``.

Example
-------
>>> ps = read_profiles("tests/data/fixtures/wosis2019")          # doctest: +SKIP
>>> ps.layers.columns.tolist()                                  # doctest: +SKIP
['profile_id', 'latitude', 'longitude', 'upper_depth_cm', 'lower_depth_cm', 'depth_m', 'soc_density']
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from proda_engine.data.errors import ProfileError
from proda_engine.data.writers import write_text_atomic

LAYER_COLUMNS = ["profile_id", "latitude", "longitude", "upper_depth_cm", "lower_depth_cm", "depth_m",
                 "soc_density"]
PROFILE_COLUMNS = ["profile_id", "latitude", "longitude", "n_layers", "max_depth_m"]
TIDY_COLUMNS = ["profile_id", "latitude", "longitude", "upper_depth_cm", "lower_depth_cm", "soc_density_kg_m3"]
BD_CODES = ("bdfiod", "bdfi33", "bdws33")  # preference order (oven-dry, then 33 kPa, then whole soil)
LAYOUTS = ("wosis_2019", "wosis_2023", "tidy_csv")

REASONS: dict[str, str] = {
    "duplicate_layer": "duplicate layer (first kept)",
    "missing_depth": "missing upper/lower depth",
    "non_numeric_depth": "non-numeric upper/lower depth",
    "litter_layer": "litter layer",
    "negative_depth": "negative depth",
    "lower_not_below_upper": "lower depth not below upper depth",
    "non_numeric_value": "non-numeric value",
    "missing_orgc": "missing organic carbon",
    "missing_bulk_density": "missing bulk density",
    "missing_soc": "missing SOC density",
    "out_of_range_value": "value out of range",
    "soc_zero": "SOC = 0",
    "no_profile_record": "profile not in the profiles table",
    "invalid_coordinates": "missing/invalid coordinates",
    "fewer_than_two_layers": "fewer than two valid layers",
    "no_valid_layer": "no valid layer",
    "cfvo_missing_assumed_zero": "coarse fragments missing, assumed 0",
    "bulk_density_from_bdfi33": "bulk density from bdfi33 (bdfiod missing)",
    "bulk_density_from_bdws33": "bulk density from bdws33 (bdfiod, bdfi33 missing)",
    "multi_value_averaged": "several values in braces, averaged",
}
_MISSING_TOKENS = {"", "na", "nan", "n/a", "null", "none", "-", "--"}
_TRUE = {"t", "true", "1", "yes", "y"}
_FALSE = {"f", "false", "0", "no", "n", ""}


# ---------------------------------------------------------------------------------------------
# report


@dataclass
class SkipReport:
    """Counts of dropped layers and profiles by reason, and the files each reason came from."""

    layers: Counter = field(default_factory=Counter)
    profiles: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    files: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    n_layers_read: int = 0
    n_profiles_read: int = 0
    n_layers_kept: int = 0
    n_profiles_kept: int = 0
    n_single_layer_profiles: int = 0  # kept profiles with one valid layer (min_layers=1)
    n_multi_layer_profiles: int = 0  # kept profiles with two or more

    def add_layers(self, reason: str, n: int, file: str) -> None:
        if n:
            self.layers[reason] += int(n)
            self.files[reason].add(file)

    def add_profiles(self, reason: str, n: int, file: str) -> None:
        if n:
            self.profiles[reason] += int(n)
            self.files[reason].add(file)

    def add_note(self, reason: str, n: int, file: str) -> None:
        if n:
            self.notes[reason] += int(n)
            self.files[reason].add(file)

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-serialisable) for run reports."""
        return {
            "n_layers_read": self.n_layers_read,
            "n_layers_kept": self.n_layers_kept,
            "n_profiles_read": self.n_profiles_read,
            "n_profiles_kept": self.n_profiles_kept,
            "n_single_layer_profiles": self.n_single_layer_profiles,
            "n_multi_layer_profiles": self.n_multi_layer_profiles,
            "layers_dropped": dict(sorted(self.layers.items())),
            "profiles_dropped": dict(sorted(self.profiles.items())),
            "notes": dict(sorted(self.notes.items())),
            "files": {k: sorted(v) for k, v in sorted(self.files.items())},
        }

    def __str__(self) -> str:
        lines = [
            f"profiles: {self.n_profiles_kept} kept of {self.n_profiles_read} read; "
            f"layers: {self.n_layers_kept} kept of {self.n_layers_read} read",
            f"kept profiles with one layer: {self.n_single_layer_profiles}, with two or more: "
            f"{self.n_multi_layer_profiles}",
        ]
        for title, counter in (("layers dropped", self.layers), ("profiles dropped", self.profiles),
                               ("notes", self.notes)):
            if counter:
                lines.append(f"{title}:")
                for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                    desc = REASONS.get(k, REASONS.get(k.removeprefix("profile_"), k))
                    if k.startswith("profile_"):
                        desc = f"in a dropped profile ({desc})"
                    lines.append(f"  {v:6d}  {desc} [{k}; {', '.join(sorted(self.files.get(k, ())))}]")
        return "\n".join(lines)


@dataclass
class ProfileSet:
    """Observed SOC profiles.

    Attributes:
        layers: one row per kept layer: ``profile_id``, ``latitude``, ``longitude`` (deg),
            ``upper_depth_cm``, ``lower_depth_cm`` (cm), ``depth_m`` (mid-depth, m),
            ``soc_density`` (g C m-3); sorted by profile then depth.
        profiles: one row per kept profile: ``profile_id``, ``latitude``, ``longitude``, ``n_layers``,
            ``max_depth_m`` (deepest lower depth, m).
        report: counted skips by reason.
        layout: detected layout (``wosis_2019``, ``wosis_2023``, ``tidy_csv``).
        sources: files read.
    """

    layers: pd.DataFrame
    profiles: pd.DataFrame
    report: SkipReport
    layout: str
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.profiles)


# ---------------------------------------------------------------------------------------------
# parsing helpers


def _parse_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse text cells as floats.

    Returns (values, missing, non_numeric, multi) arrays. ``{27.5}`` (WoSIS 2023) is unwrapped;
    ``{1:5.4, 2:8.2}`` / ``{5.4, 8.2}`` are averaged and flagged ``multi``.
    """
    txt = s.astype(str).str.strip()
    low = txt.str.lower()
    missing = low.isin(_MISSING_TOKENS).to_numpy()
    braced = txt.str.startswith("{") & txt.str.endswith("}")
    inner = txt.where(~braced, txt.str.slice(1, -1).str.strip())
    vals = pd.to_numeric(inner.where(~missing, None), errors="coerce").to_numpy(dtype=np.float64, copy=True)
    missing = missing.copy()  # pandas may hand out read-only views (copy-on-write)
    multi = np.zeros(len(txt), dtype=bool)
    todo = np.flatnonzero(braced.to_numpy() & np.isnan(vals) & ~missing)
    for i in todo:
        parts = [p.split(":")[-1].strip() for p in str(inner.iat[i]).split(",") if p.strip()]
        nums = pd.to_numeric(pd.Series(parts, dtype=object), errors="coerce")
        if len(parts) and nums.notna().all():
            vals[i] = float(nums.mean())
            multi[i] = len(parts) > 1
        elif not parts:
            missing[i] = True
    non_numeric = ~missing & np.isnan(vals)
    vals = np.where(np.isinf(vals), np.nan, vals)
    non_numeric |= ~missing & np.isnan(vals)
    return vals, missing, non_numeric, multi


def _parse_bool(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    low = s.astype(str).str.strip().str.lower()
    return low.isin(_TRUE).to_numpy(), ~(low.isin(_TRUE) | low.isin(_FALSE)).to_numpy()


def _read_header(path: Path) -> tuple[list[str], str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except FileNotFoundError:
        raise ProfileError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path.name}: cannot be read as UTF-8 text ({exc})") from exc
    if not first.strip():
        raise ProfileError(f"{path.name}: row 1: expected a header row, found an empty file")
    delim = "\t" if "\t" in first else ("," if first.count(",") >= first.count(";") else ";")
    header = next(csv.reader([first], delimiter=delim, quotechar='"'))
    return [h.strip() for h in header], delim


def _read_table(path: Path, required: Sequence[str], optional: Sequence[str] = (),
                any_of: Sequence[str] = ()) -> pd.DataFrame:
    """Read the needed columns of a delimited UTF-8 table as text (nothing parsed yet)."""
    header, delim = _read_header(path)
    lower = {h.lower(): h for h in header}
    missing = [c for c in required if c.lower() not in lower]
    if any_of and not any(c.lower() in lower for c in any_of):
        missing.append(" or ".join(any_of))
    if missing:
        raise ProfileError(
            f"{path.name}: row 1 (header): missing required column(s) {', '.join(repr(m) for m in missing)}; "
            f"expected {', '.join(list(required) + ([' or '.join(any_of)] if any_of else []))}; "
            f"found {', '.join(header)}"
        )
    wanted = [lower[c.lower()] for c in (*required, *optional, *any_of) if c.lower() in lower]
    wanted = list(dict.fromkeys(wanted))
    try:
        df = pd.read_csv(path, sep=delim, quotechar='"', dtype=str, keep_default_na=False,
                         usecols=wanted, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as exc:
        raise ProfileError(f"{path.name}: cannot be parsed as a {'tab' if delim == chr(9) else repr(delim)}-"
                           f"separated UTF-8 table ({type(exc).__name__}: {exc})") from exc
    return df.rename(columns={lower[c.lower()]: c.lower() for c in wanted if c.lower() in lower})


# ---------------------------------------------------------------------------------------------
# layout detection


def _classify(path: Path) -> tuple[str, str] | None:
    """(layout, role) of a file from its header (and, for WoSIS 2023, the property in its name)."""
    header, _ = _read_header(path)
    cols = {h.lower() for h in header}
    if "soc_density_kg_m3" in cols:
        return "tidy_csv", "tidy"
    if "orgc_value_avg" in cols:
        return "wosis_2019", "chemical"
    if any(f"{c}_value_avg" in cols for c in (*BD_CODES, "cfvo")):
        return "wosis_2019", "physical"
    if "value_avg" in cols:
        m = re.search(r"_(orgc|bdfiod|bdfi33|bdws33|cfvo)\.(tsv|csv|txt)$", path.name.lower())
        if m:
            return "wosis_2023", m.group(1)
        return None
    name = path.name.lower()
    is_profiles_name = re.search(r"_profiles\.(tsv|csv|txt)$", name) is not None
    if "profile_id" in cols and "upper_depth" not in cols and (
            {"latitude", "longitude"} <= cols or is_profiles_name):
        # a profiles table that lacks coordinates is still a profiles table: the reader then names
        # the missing column instead of reporting an unknown file
        return ("wosis_2023" if "2023" in name or "202312" in name else "wosis_2019"), "profiles"
    return None


def _collect(path_or_paths: str | PathLike | Sequence[str | PathLike]) -> tuple[str, dict[str, Path]]:
    if isinstance(path_or_paths, (str, PathLike)):
        items = [Path(path_or_paths)]
    else:
        items = [Path(p) for p in path_or_paths]
    files: list[tuple[Path, bool]] = []  # (path, explicit)
    for p in items:
        if p.is_dir():
            files += [(q, False) for q in sorted(p.iterdir())
                      if q.is_file() and q.suffix.lower() in (".tsv", ".csv", ".txt")]
        elif p.exists():
            files.append((p, True))
        else:
            raise ProfileError(f"{p}: file or folder not found")
    roles: dict[str, dict[str, Path]] = defaultdict(dict)
    for p, explicit in files:
        cls = _classify(p)
        if cls is None:
            if explicit:
                raise ProfileError(
                    f"{p.name}: row 1 (header): expected a WoSIS 2019 / WoSIS 2023 / tidy CSV header "
                    f"(e.g. columns {', '.join(TIDY_COLUMNS)}), found {', '.join(_read_header(p)[0])}"
                )
            continue
        layout, role = cls
        if role in roles[layout] and layout != "tidy_csv":
            raise ProfileError(f"{p.name}: a second {layout} {role} table (first: {roles[layout][role].name})")
        roles[layout][role if layout != "tidy_csv" else f"tidy{len(roles[layout])}"] = p
    # the profiles table is shared in name by both WoSIS layouts: attach it where the layers are
    if "profiles" in roles.get("wosis_2019", {}) and "wosis_2023" in roles and "chemical" not in roles["wosis_2019"]:
        roles["wosis_2023"].setdefault("profiles", roles["wosis_2019"].pop("profiles"))
    layouts = [k for k, v in roles.items() if any(r != "profiles" for r in v)]
    if not layouts:
        found = ", ".join(p.name for p, _ in files) or "no files"
        raise ProfileError(f"{', '.join(str(p) for p in items)}: expected WoSIS 2019, WoSIS 2023 or tidy CSV "
                           f"profile tables, found {found}")
    if len(layouts) > 1:
        raise ProfileError(f"{', '.join(str(p) for p in items)}: found several layouts ({', '.join(layouts)}); "
                           f"read them separately")
    return layouts[0], roles[layouts[0]]


# ---------------------------------------------------------------------------------------------
# shared layer checks


def _depth_checks(df: pd.DataFrame, ok: np.ndarray, reason: np.ndarray,
                  upper_col: str = "upper_depth", lower_col: str = "lower_depth") -> tuple[np.ndarray, np.ndarray]:
    up, up_miss, up_bad, _ = _parse_numbers(df[upper_col])
    lo, lo_miss, lo_bad, _ = _parse_numbers(df[lower_col])
    _flag(ok, reason, up_miss | lo_miss, "missing_depth")
    _flag(ok, reason, up_bad | lo_bad, "non_numeric_depth")
    return up, lo


def _flag(ok: np.ndarray, reason: np.ndarray, cond: np.ndarray, name: str) -> None:
    """Mark rows that are still ok and meet ``cond`` as dropped for ``name`` (first reason wins)."""
    hit = ok & cond
    reason[hit] = name
    ok &= ~hit


def _geometry_checks(ok: np.ndarray, reason: np.ndarray, up: np.ndarray, lo: np.ndarray,
                     litter: np.ndarray) -> None:
    _flag(ok, reason, litter, "litter_layer")
    with np.errstate(invalid="ignore"):
        _flag(ok, reason, (up < 0) | (lo < 0), "negative_depth")
        _flag(ok, reason, lo <= up, "lower_not_below_upper")


def _count(report: SkipReport, reason: np.ndarray, ok: np.ndarray, file_of: np.ndarray) -> None:
    dropped = pd.DataFrame({"reason": reason[~ok], "file": file_of[~ok]})
    for (r, f), n in dropped.value_counts(sort=False).items():
        report.add_layers(str(r), int(n), str(f))


def _valid_coord(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (lon >= -180) & (lon <= 360)


def _finish(layers: pd.DataFrame, coords: pd.DataFrame, report: SkipReport, layout: str,
            sources: list[str], coord_file: str, layer_file: str, min_layers: int = 2) -> ProfileSet:
    """Profile-level checks and output assembly.

    ``min_layers`` (1 or 2): profiles with fewer valid layers are dropped and counted
    (``fewer_than_two_layers`` or ``no_valid_layer``); the kept profiles are counted as single- and
    multi-layer in the report's notes.

    ``layers`` holds kept layers with profile_id, upper/lower depth (cm) and soc_density (g C m-3);
    ``coords`` one row per known profile with ``latitude``/``longitude`` (floats, NaN if invalid).
    """
    known = set(coords["profile_id"])
    no_rec = ~layers["profile_id"].isin(known)
    if no_rec.any():
        report.add_profiles("no_profile_record", layers.loc[no_rec, "profile_id"].nunique(), layer_file)
        report.add_layers("profile_no_profile_record", int(no_rec.sum()), layer_file)
        layers = layers.loc[~no_rec]
    cvalid = _valid_coord(coords["latitude"].to_numpy(), coords["longitude"].to_numpy())
    bad_ids = set(coords.loc[~cvalid, "profile_id"])
    report.add_profiles("invalid_coordinates", len(bad_ids), coord_file)
    in_bad = layers["profile_id"].isin(bad_ids)
    report.add_layers("profile_invalid_coordinates", int(in_bad.sum()), layer_file)
    layers = layers.loc[~in_bad]
    counts = layers.groupby("profile_id").size()
    good_ids = set(counts.index[counts >= min_layers])
    few_ids = (known - bad_ids) - good_ids
    reason = "fewer_than_two_layers" if min_layers >= 2 else "no_valid_layer"
    report.add_profiles(reason, len(few_ids), layer_file)
    few = ~layers["profile_id"].isin(good_ids)
    report.add_layers(f"profile_{reason}", int(few.sum()), layer_file)
    layers = layers.loc[~few]
    kept_counts = counts[counts.index.isin(good_ids)]
    report.n_single_layer_profiles = int((kept_counts == 1).sum())
    report.n_multi_layer_profiles = int((kept_counts >= 2).sum())

    layers = layers.merge(coords, on="profile_id", how="left")
    # WoSIS longitudes are -180..180; wrap any 0..360 input to the same convention
    layers["longitude"] = (layers["longitude"] + 180.0) % 360.0 - 180.0
    layers["upper_depth_cm"] = layers["upper_depth_cm"].astype(np.float64)
    layers["lower_depth_cm"] = layers["lower_depth_cm"].astype(np.float64)
    layers["depth_m"] = (layers["upper_depth_cm"] + layers["lower_depth_cm"]) / 200.0
    layers = layers.sort_values(["profile_id", "depth_m", "upper_depth_cm"], kind="stable")
    layers = layers[LAYER_COLUMNS].reset_index(drop=True)
    layers["profile_id"] = layers["profile_id"].astype(str)
    profiles = (layers.groupby("profile_id", sort=True)
                .agg(latitude=("latitude", "first"), longitude=("longitude", "first"),
                     n_layers=("depth_m", "size"), max_depth_m=("lower_depth_cm", "max"))
                .reset_index())
    profiles["max_depth_m"] = profiles["max_depth_m"] / 100.0
    profiles["n_layers"] = profiles["n_layers"].astype(np.int64)
    report.n_layers_kept = len(layers)
    report.n_profiles_kept = len(profiles)
    layers.attrs.update({"units": {"latitude": "degrees_north", "longitude": "degrees_east",
                                   "upper_depth_cm": "cm", "lower_depth_cm": "cm", "depth_m": "m",
                                   "soc_density": "g C m-3"}})
    profiles.attrs.update({"units": {"latitude": "degrees_north", "longitude": "degrees_east",
                                     "n_layers": "1", "max_depth_m": "m"}})
    return ProfileSet(layers=layers, profiles=profiles[PROFILE_COLUMNS], report=report, layout=layout,
                      sources=sources)


def _coords_table(df: pd.DataFrame) -> pd.DataFrame:
    lat, *_ = _parse_numbers(df["latitude"])
    lon, *_ = _parse_numbers(df["longitude"])
    out = pd.DataFrame({"profile_id": df["profile_id"].astype(str).str.strip(), "latitude": lat, "longitude": lon})
    # first row with valid coordinates per profile (WoSIS 2023 repeats them on every layer row)
    out["_ok"] = _valid_coord(lat, lon)
    out = out.sort_values("_ok", ascending=False, kind="stable").drop_duplicates("profile_id")
    return out.drop(columns="_ok").reset_index(drop=True)


def _soc(orgc: np.ndarray, bd: np.ndarray, cf: np.ndarray) -> np.ndarray:
    """g C m-3 = g kg-1 x kg dm-3 x (1 - vol%/100) x 1000 dm3 m-3."""
    return orgc * bd * (1.0 - cf / 100.0) * 1000.0


def _value_checks(ok: np.ndarray, reason: np.ndarray, report: SkipReport, *, orgc_file: str, bd_file: str,
                  cf_file: str, orgc: tuple, bds: list[tuple[str, tuple]], cf: tuple | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared orgc/bulk-density/cfvo checks. Returns (orgc, bd, cf, bd_source_file_mask)."""
    o, o_miss, o_bad, o_multi = orgc
    n = len(o)
    bd = np.full(n, np.nan)
    bd_bad = np.zeros(n, dtype=bool)
    bd_multi = np.zeros(n, dtype=bool)
    bd_code = np.array([""] * n, dtype=object)
    for code, (v, miss, bad, multi) in bds:
        take = np.isnan(bd) & ~miss & ~bad & ~bd_bad
        bd_bad |= np.isnan(bd) & bad & ~bd_bad
        bd = np.where(take, v, bd)
        bd_multi |= take & multi
        bd_code[take] = code
    if cf is not None:
        c, c_miss, c_bad, c_multi = cf
    else:
        c = np.full(n, np.nan)
        c_miss = np.ones(n, dtype=bool)
        c_bad = np.zeros(n, dtype=bool)
        c_multi = np.zeros(n, dtype=bool)
    _flag(ok, reason, o_bad | bd_bad | c_bad, "non_numeric_value")
    _flag(ok, reason, o_miss, "missing_orgc")
    _flag(ok, reason, np.isnan(bd), "missing_bulk_density")
    cf_val = np.where(c_miss, 0.0, c)
    with np.errstate(invalid="ignore"):
        oor = (o < 0) | (o > 1000) | (bd <= 0) | (bd > 3) | (cf_val < 0) | (cf_val > 100)
    _flag(ok, reason, oor, "out_of_range_value")
    soc = _soc(o, bd, cf_val)
    _flag(ok, reason, soc == 0, "soc_zero")
    report.add_note("cfvo_missing_assumed_zero", int((ok & c_miss).sum()), cf_file)
    report.add_note("bulk_density_from_bdfi33", int((ok & (bd_code == "bdfi33")).sum()), bd_file)
    report.add_note("bulk_density_from_bdws33", int((ok & (bd_code == "bdws33")).sum()), bd_file)
    report.add_note("multi_value_averaged", int((ok & (o_multi | bd_multi | c_multi)).sum()), orgc_file)
    return soc, bd, cf_val, bd_code


def _file_of_value_reasons(reason: np.ndarray, chem_file: np.ndarray, phys_file: np.ndarray) -> np.ndarray:
    """Attribute bulk-density/cfvo reasons to the physical table, the rest to the chemical one."""
    phys = np.isin(reason, ["missing_bulk_density"])
    return np.where(phys, phys_file, chem_file)


# ---------------------------------------------------------------------------------------------
# WoSIS 2019


def _drop_duplicates(df: pd.DataFrame, key: list[str], report: SkipReport, file: str) -> pd.DataFrame:
    dup = df.duplicated(key, keep="first")
    report.add_layers("duplicate_layer", int(dup.sum()), file)
    return df.loc[~dup]


def _read_wosis2019(roles: dict[str, Path], min_layers: int = 2) -> ProfileSet:
    for r in ("profiles", "chemical", "physical"):
        if r not in roles:
            raise ProfileError(f"WoSIS 2019: expected the profiles, layers_chemical and layers_physical tables; "
                               f"the {r} table was not found among {', '.join(p.name for p in roles.values())}")
    pf, cf, phf = roles["profiles"], roles["chemical"], roles["physical"]
    report = SkipReport()
    prof = _read_table(pf, ["profile_id", "latitude", "longitude"])
    chem = _read_table(cf, ["profile_id", "upper_depth", "lower_depth", "orgc_value_avg"],
                       ["profile_layer_id", "litter"])
    phys = _read_table(phf, ["profile_id", "upper_depth", "lower_depth"], ["profile_layer_id", "litter",
                       "cfvo_value_avg"], any_of=[f"{c}_value_avg" for c in BD_CODES])
    use_ids = "profile_layer_id" in chem.columns and "profile_layer_id" in phys.columns
    key = ["profile_id", "profile_layer_id"] if use_ids else ["profile_id", "upper_depth", "lower_depth"]
    for df in (chem, phys):
        for k in key:
            df[k] = df[k].astype(str).str.strip()
        if "litter" not in df.columns:
            df["litter"] = ""
    chem = _drop_duplicates(chem, key, report, cf.name)
    phys = _drop_duplicates(phys, key, report, phf.name)
    chem = chem.assign(_in_chem=True)
    phys = phys.assign(_in_phys=True)
    m = chem.merge(phys, on=key, how="outer", suffixes=("", "_phys"), sort=False)
    in_chem = m["_in_chem"].notna().to_numpy()
    for col in ("upper_depth", "lower_depth", "litter"):
        if f"{col}_phys" in m.columns:
            # depths from the chemical table when the layer is there, else from the physical one
            m[col] = m[col].where(in_chem, m[f"{col}_phys"])
    m = m.drop(columns=["_in_chem", "_in_phys"]).fillna("")  # absent on one side -> empty -> missing
    n = len(m)
    report.n_layers_read = n
    report.n_profiles_read = len(set(m["profile_id"]) | set(prof["profile_id"].astype(str).str.strip()))
    chem_file = np.full(n, cf.name, dtype=object)
    phys_file = np.full(n, phf.name, dtype=object)
    ok = np.ones(n, dtype=bool)
    reason = np.array([""] * n, dtype=object)
    up, lo = _depth_checks(m, ok, reason)
    litter, litter_bad = _parse_bool(m["litter"])
    if "litter_phys" in m.columns:
        lit_p, lit_p_bad = _parse_bool(m["litter_phys"])
        litter, litter_bad = litter | lit_p, litter_bad | lit_p_bad
    _flag(ok, reason, litter_bad, "non_numeric_value")
    _geometry_checks(ok, reason, up, lo, litter)
    bds = [(c, _parse_numbers(m[f"{c}_value_avg"])) for c in BD_CODES if f"{c}_value_avg" in m.columns]
    cfv = _parse_numbers(m["cfvo_value_avg"]) if "cfvo_value_avg" in m.columns else None
    soc, *_ = _value_checks(ok, reason, report, orgc_file=cf.name, bd_file=phf.name, cf_file=phf.name,
                            orgc=_parse_numbers(m["orgc_value_avg"]), bds=bds, cf=cfv)
    file_of = _file_of_value_reasons(reason, np.where(in_chem, chem_file, phys_file), phys_file)
    _count(report, reason, ok, file_of)
    kept = pd.DataFrame({"profile_id": m["profile_id"].to_numpy()[ok], "upper_depth_cm": up[ok],
                         "lower_depth_cm": lo[ok], "soc_density": soc[ok]})
    coords = _coords_table(prof)
    return _finish(kept, coords, report, "wosis_2019", [pf.name, cf.name, phf.name], pf.name, cf.name,
                   min_layers=min_layers)


# ---------------------------------------------------------------------------------------------
# WoSIS 2023


def _read_wosis2023(roles: dict[str, Path], min_layers: int = 2) -> ProfileSet:
    if "orgc" not in roles:
        raise ProfileError(f"WoSIS 2023: expected a wosis_202312_orgc.tsv table, found "
                           f"{', '.join(p.name for p in roles.values())}")
    bd_roles = [c for c in BD_CODES if c in roles]
    if not bd_roles:
        raise ProfileError(f"WoSIS 2023: expected a bulk-density table (wosis_202312_bdfiod.tsv, _bdfi33 or "
                           f"_bdws33), found {', '.join(p.name for p in roles.values())}")
    of = roles["orgc"]
    report = SkipReport()
    has_prof = "profiles" in roles
    orgc = _read_table(of, ["profile_id", "upper_depth", "lower_depth", "value_avg"]
                       + ([] if has_prof else ["latitude", "longitude"]),
                       ["latitude", "longitude", "litter"])
    orgc["profile_id"] = orgc["profile_id"].astype(str).str.strip()
    n = len(orgc)
    report.n_layers_read = n
    ok = np.ones(n, dtype=bool)
    reason = np.array([""] * n, dtype=object)
    up, lo = _depth_checks(orgc, ok, reason)
    if "litter" in orgc.columns:
        lit, lit_bad = _parse_bool(orgc["litter"])
        _flag(ok, reason, lit_bad, "non_numeric_value")
    else:
        lit = np.zeros(n, dtype=bool)
    _geometry_checks(ok, reason, up, lo, lit)
    # the layer key is (profile, upper, lower) as numbers; 2023 tables carry no shared layer id
    key = pd.DataFrame({"profile_id": orgc["profile_id"], "u": np.round(up, 6), "l": np.round(lo, 6)})
    dup = key.duplicated(keep="first").to_numpy() & ok
    _flag(ok, reason, dup, "duplicate_layer")

    def lookup(role: str) -> tuple:
        t = _read_table(roles[role], ["profile_id", "upper_depth", "lower_depth", "value_avg"])
        tu, *_ = _parse_numbers(t["upper_depth"])
        tl, *_ = _parse_numbers(t["lower_depth"])
        tk = pd.DataFrame({"profile_id": t["profile_id"].astype(str).str.strip(), "u": np.round(tu, 6),
                           "l": np.round(tl, 6), "value": t["value_avg"]}).drop_duplicates(["profile_id", "u", "l"])
        j = key.merge(tk, on=["profile_id", "u", "l"], how="left")
        return _parse_numbers(j["value"].fillna(""))

    bds = [(c, lookup(c)) for c in bd_roles]
    cfv = lookup("cfvo") if "cfvo" in roles else None
    bd_file = roles[bd_roles[0]].name
    cf_file = roles["cfvo"].name if "cfvo" in roles else bd_file
    soc, *_ = _value_checks(ok, reason, report, orgc_file=of.name, bd_file=bd_file, cf_file=cf_file,
                            orgc=_parse_numbers(orgc["value_avg"]), bds=bds, cf=cfv)
    file_of = _file_of_value_reasons(reason, np.full(n, of.name, dtype=object), np.full(n, bd_file, dtype=object))
    _count(report, reason, ok, file_of)
    kept = pd.DataFrame({"profile_id": orgc["profile_id"].to_numpy()[ok], "upper_depth_cm": up[ok],
                         "lower_depth_cm": lo[ok], "soc_density": soc[ok]})
    if has_prof:
        prof = _read_table(roles["profiles"], ["profile_id", "latitude", "longitude"])
        coords = _coords_table(prof)
        coord_file = roles["profiles"].name
    else:
        coords = _coords_table(orgc)
        coord_file = of.name
    report.n_profiles_read = len(set(orgc["profile_id"]) | set(coords["profile_id"]))
    sources = [p.name for p in roles.values()]
    return _finish(kept, coords, report, "wosis_2023", sources, coord_file, of.name, min_layers=min_layers)


# ---------------------------------------------------------------------------------------------
# tidy CSV


def _read_tidy(roles: dict[str, Path], min_layers: int = 2) -> ProfileSet:
    report = SkipReport()
    frames = []
    for p in roles.values():
        df = _read_table(p, TIDY_COLUMNS)
        df["_file"] = p.name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["profile_id"] = df["profile_id"].astype(str).str.strip()
    n = len(df)
    report.n_layers_read = n
    report.n_profiles_read = df["profile_id"].nunique()
    file_of = df["_file"].to_numpy(dtype=object)
    ok = np.ones(n, dtype=bool)
    reason = np.array([""] * n, dtype=object)
    up, lo = _depth_checks(df, ok, reason, "upper_depth_cm", "lower_depth_cm")
    _geometry_checks(ok, reason, up, lo, np.zeros(n, dtype=bool))
    s, s_miss, s_bad, s_multi = _parse_numbers(df["soc_density_kg_m3"])
    _flag(ok, reason, s_bad, "non_numeric_value")
    _flag(ok, reason, s_miss, "missing_soc")
    with np.errstate(invalid="ignore"):
        _flag(ok, reason, s < 0, "out_of_range_value")
    _flag(ok, reason, s == 0, "soc_zero")
    for f in sorted(set(file_of[ok & s_multi])):
        report.add_note("multi_value_averaged", int((ok & s_multi & (file_of == f)).sum()), str(f))
    _count(report, reason, ok, file_of)
    kept = pd.DataFrame({"profile_id": df["profile_id"].to_numpy()[ok], "upper_depth_cm": up[ok],
                         "lower_depth_cm": lo[ok], "soc_density": s[ok] * 1000.0})  # kg m-3 -> g m-3
    coords = _coords_table(df)
    names = sorted(set(file_of))
    return _finish(kept, coords, report, "tidy_csv", names, ", ".join(names), ", ".join(names),
                   min_layers=min_layers)


_READERS = {"wosis_2019": _read_wosis2019, "wosis_2023": _read_wosis2023, "tidy_csv": _read_tidy}


def read_profiles(path_or_paths: str | PathLike | Sequence[str | PathLike], *, layout: str | None = None,
                  min_layers: int = 2) -> ProfileSet:
    """Read soil profiles from a folder or explicit files, detecting the layout from the headers.

    Args:
        path_or_paths: a folder (files inside are classified by header; unrelated files ignored)
            or explicit files (each must be recognised).
        layout: expected layout (``wosis_2019``, ``wosis_2023``, ``tidy_csv``); None accepts any.
        min_layers: fewest valid layers a kept profile has: 2 for site-level MCMC (the default, as the
            original method), 1 for end-to-end training and evaluation, which can use single-layer
            profiles. The report's notes count the kept single- and multi-layer profiles.

    Returns:
        :class:`ProfileSet` with SOC density in g C m-3 at mid-depth (m) and a :class:`SkipReport`.

    Raises:
        ProfileError: unreadable file, missing required column, unknown or mixed layout, or a
            layout different from ``layout``.
    """
    found, roles = _collect(path_or_paths)
    if layout is not None and layout != found:
        if layout not in LAYOUTS:
            raise ProfileError(f"layout: expected one of {', '.join(LAYOUTS)}, found {layout!r}")
        raise ProfileError(f"{', '.join(p.name for p in roles.values())}: expected layout {layout}, "
                           f"found {found} (detected from the headers)")
    if min_layers not in (1, 2):
        raise ProfileError(f"min_layers: expected 1 or 2, found {min_layers!r}")
    return _READERS[found](roles, min_layers=min_layers)


def write_tidy_csv(profileset: ProfileSet, path: str | PathLike) -> Path:
    """Write kept layers as the tidy CSV layout (SOC in kg C m-3), atomically; returns the path."""
    df = profileset.layers
    out = pd.DataFrame({
        "profile_id": df["profile_id"],
        "latitude": df["latitude"],
        "longitude": df["longitude"],
        "upper_depth_cm": df["upper_depth_cm"],
        "lower_depth_cm": df["lower_depth_cm"],
        "soc_density_kg_m3": df["soc_density"] / 1000.0,
    })
    return write_text_atomic(out.to_csv(index=False, float_format="%.10g", lineterminator="\n"), path)


def iter_reasons() -> Iterable[str]:
    """All reason codes a :class:`SkipReport` can hold (for docs and dashboards)."""
    return iter(REASONS)
