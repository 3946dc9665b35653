"""What the user has picked: region, depth, variable, parameter source and six perturbations.

This is the only state that is shared through the URL (read once per session and checked value by
value: :meth:`DashboardState.validate_query`), so every value is a plain string or integer: a named
region is its key in ``api.regions()``, a box drawn on the map is
``"box:lon_min,lon_max,lat_min,lat_max"`` (shareable too), and an uploaded polygon is
``"polygon:<n>"`` (only meaningful in the session that uploaded it).

Perturbations are whole percent (-50..+50) of each bulk process (spec §(j): microbial CUE, K̄, ξ̄, V̄, Ī,
carbon input) because that is what the sliders show and what reads well in a URL (``?K=10&NPP=-10``);
:meth:`DashboardState.perturbation` converts them to the engine's relative changes (5 -> 0.05).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import param

from dashboard.safe import checked_query, parse_flag, parse_percent
from proda_engine import api

#: Map variables: label shown in the select -> name of the variable in ``WhatIfResult.maps``.
VARIABLES: dict[str, str] = {
    "SOC stock": "soc_stock",
    "SOC change vs baseline": "soc_change",
    "turnover time": "turnover",
    "microbial CUE": "cue",
}

#: Extra map layers (label -> key); offered only where the world has them (see ``DashboardState``).
SPREAD_VARIABLE = "soc_sd"
MISFIT_VARIABLE = "misfit"
#: The shipped reference product (Sanderman, Hengl & Fiske 2017) and the source's difference from it.
REFERENCE_VARIABLE = "reference"
REFERENCE_DIFF_VARIABLE = "minus_reference"
EXTRA_VARIABLES: dict[str, str] = {
    "ensemble s.d. of SOC stock": SPREAD_VARIABLE,
    "model − observation at sites": MISFIT_VARIABLE,
    "reference SOC stock (Sanderman et al. 2017)": REFERENCE_VARIABLE,
    "source − reference SOC stock": REFERENCE_DIFF_VARIABLE,
}

#: Parameter maps are ``"param:<name>"`` (one per row of the 21-parameter table).
PARAM_PREFIX = "param:"


def parameter_variables() -> dict[str, str]:
    """Select labels -> keys of the 21 parameter maps, e.g. ``"Q10 (q10) [Xi]" -> "param:q10"``."""
    rows = api.parameter_table()
    labels = {r["name"]: r for r in rows}
    return {f"{_PARAM_LABELS.get(n, n)} ({n}) [{labels[n]['group']}]": f"{PARAM_PREFIX}{n}" for n in labels}


def variable_label(key: str) -> str:
    """Human label of any map variable key."""
    for table in (VARIABLES, EXTRA_VARIABLES, parameter_variables()):
        for label, k in table.items():
            if k == key:
                return label
    return key


#: Mechanism codes, in the engine's order; each is an integer-percent parameter of the state.
MECHANISMS: tuple[str, ...] = ("A", "K", "Xi", "V", "I", "NPP")

#: Slider range in percent (the brief: -50..+50 % -> -0.5..0.5 relative change).
PERTURBATION_BOUNDS: tuple[int, int] = (-50, 50)

#: State parameters mirrored in the URL query string (parameter name -> query key).
URL_PARAMS: dict[str, str] = {name: name for name in ("region", "depth", "variable", "source", "sites",
                                                        *MECHANISMS)}

BOX_PREFIX = "box:"
POLYGON_PREFIX = "polygon:"

_MECH_LABELS = api.mechanisms()
#: Short parameter labels for the select (the API table carries name, group, units, doc).
_PARAM_LABELS: dict[str, str] = {
    "diffus": "bioturbation", "cryo": "cryoturbation", "q10": "Q10", "efolding": "e-folding depth",
    "taucwd": "tau CWD", "taul1": "tau L1", "taul2": "tau L2/L3", "tau4s1": "tau S1", "tau4s2": "tau S2",
    "tau4s3": "tau S3", "fl1s1": "f L1->S1", "fl2s1": "f L2->S1", "fl3s2": "f L3->S2", "fs1s2": "f S1->S2",
    "fs1s3": "f S1->S3", "fs2s1": "f S2->S1", "fs2s3": "f S2->S3", "fs3s1": "f S3->S1", "fcwdl2": "f CWD->L2",
    "wscaling": "water scaling", "beta": "input beta",
}
if tuple(_MECH_LABELS) != MECHANISMS:  # the sliders below are declared by hand; fail loudly on drift
    raise RuntimeError(f"dashboard expects mechanisms {MECHANISMS}, the API offers {tuple(_MECH_LABELS)}")


def _pert_param(code: str) -> param.Integer:
    return param.Integer(0, bounds=PERTURBATION_BOUNDS, label=f"{_MECH_LABELS[code]} ({code}), %",
                         doc=f"Relative change of the region's {_MECH_LABELS[code]} (the bulk process of spec "
                             f"(j)), in percent; the engine finds the change of the model that realises it.")


def box_key(lon_min: float, lon_max: float, lat_min: float, lat_max: float) -> str:
    """Region key of a lat/lon box, rounded to 0.01° so it reads well in a URL."""
    return f"{BOX_PREFIX}{lon_min:.2f},{lon_max:.2f},{lat_min:.2f},{lat_max:.2f}"


#: One number of a box key: ASCII digits, an optional sign and decimals (what :func:`box_key` writes,
#: and what a person types); ``float()`` alone would also take "nan", "1e3", "1_0" or Arabic digits.
_BOX_NUMBER = re.compile(r"[+-]?[0-9]{1,3}(?:\.[0-9]{1,8})?")


def parse_box_key(key: str) -> tuple[float, float, float, float]:
    """Inverse of :func:`box_key`; raises ``ValueError`` on malformed input (e.g. a hand-edited URL).

    The message never repeats the key (it may come from a link: see :mod:`dashboard.safe`).
    """
    if not isinstance(key, str) or not key.startswith(BOX_PREFIX):
        raise ValueError("not a box region")
    fields = key[len(BOX_PREFIX):].split(",")
    if len(fields) != 4 or not all(_BOX_NUMBER.fullmatch(f) for f in fields):
        raise ValueError("a box needs 4 numbers: box:lon_min,lon_max,lat_min,lat_max (degrees)")
    lon_min, lon_max, lat_min, lat_max = (float(f) for f in fields)
    if not (-90 <= lat_min < lat_max <= 90 and -180 <= lon_min <= 180 and -180 <= lon_max <= 180):
        raise ValueError("box outside the globe or empty")
    return lon_min, lon_max, lat_min, lat_max


def box_label(key: str) -> str:
    lon_min, lon_max, lat_min, lat_max = parse_box_key(key)
    return f"box {lon_min:.1f}..{lon_max:.1f}°E, {lat_min:.1f}..{lat_max:.1f}°N"


class DashboardState(param.Parameterized):
    """The user's selection (one instance per browser session).

    Selector objects are filled per instance from the API in ``__init__`` (they depend on the world);
    ``region`` accepts values outside its list (``check_on_set=False``) so a box from a shared URL is
    valid before it has been added to the list.
    """

    region = param.Selector(default="globe", objects={"Globe": "globe"}, check_on_set=False,
                            doc="Region key: a name of api.regions(), 'box:...' or 'polygon:<n>'.")
    depth = param.Selector(default="0-100cm", objects=api.depth_intervals(), doc="Depth interval of SOC stocks.")
    variable = param.Selector(default="soc_stock", objects=VARIABLES, check_on_set=False,
                              doc="Map variable: a key of VARIABLES, 'soc_sd', 'misfit' or 'param:<name>'.")
    source = param.Selector(default=None, objects=[], allow_None=True, label="Parameter source",
                            doc="Where the 21 parameters per cell come from (api.parameter_sources()).")
    sites = param.Boolean(False, label="Show observed sites", doc="Overlay the observed soil profiles on the map.")
    A = _pert_param("A")
    K = _pert_param("K")
    Xi = _pert_param("Xi")
    V = _pert_param("V")
    I = _pert_param("I")
    NPP = _pert_param("NPP")

    def __init__(self, world: str | None = None, **params) -> None:
        regions = api.regions(world)
        sources = api.parameter_sources(world)
        super().__init__(**params)
        # per-instance objects: param copies the Parameter on first instance access, so sessions never
        # see each other's boxes or polygons
        self.param.region.objects = {r.label: key for key, r in regions.items()}
        self.param.source.objects = {label: key for key, label in sources.items()}
        if self.source is None or self.source not in sources:
            self.source = next(iter(sources))
        # every variable any source of this world can show (the spread exists for some sources only;
        # the store falls back with a message when the current source has none)
        self.param.variable.objects = {**VARIABLES, **EXTRA_VARIABLES, **parameter_variables()}

    # -- URL -------------------------------------------------------------------------------
    def validate_query(self, query: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
        """Check the raw strings of a URL query (:func:`dashboard.safe.url_query`) against this state.

        Returns ``(values, ignored)``: the values to apply (only keys of :data:`URL_PARAMS` whose value
        is one this session can use, converted to the parameter's type; a box is rewritten in
        :func:`box_key` form) and the URL keys whose values were unknown, malformed or out of range
        (they keep their defaults). Uploaded polygons are never valid in a link: they belong to the
        session that uploaded them. Nothing here raises.
        """
        return checked_query(query, URL_PARAMS, self._check_url_value)

    def url_query(self) -> dict[str, str]:
        """The state as URL query strings (the inverse of :meth:`validate_query`), e.g. ``{"A": "5", ...}``."""
        out = {}
        for name, key in URL_PARAMS.items():
            value = getattr(self, name)
            if value is None:
                continue
            out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out

    def _check_url_value(self, name: str, raw: str) -> object:
        if name in MECHANISMS:
            return parse_percent(raw, PERTURBATION_BOUNDS)
        if name == "sites":
            return parse_flag(raw)
        if name == "region":
            if raw.startswith(BOX_PREFIX):
                return box_key(*parse_box_key(raw))
            if raw in list(self.param.region.objects):  # a named region (or this session's own polygon)
                return raw
            raise ValueError("unknown region")
        if raw not in list(self.param[name].objects):  # depth, variable, source: one of this session's choices
            raise ValueError(f"unknown {name}")
        return raw

    # -- helpers ---------------------------------------------------------------------------
    def perturbation(self) -> dict[str, float]:
        """Relative changes for ``api.what_if`` (only non-zero mechanisms; 5 % -> 0.05)."""
        return {m: getattr(self, m) / 100.0 for m in MECHANISMS if getattr(self, m)}

    def reset_perturbations(self) -> None:
        """All six sliders back to 0 % in one event (one re-solve, not six)."""
        self.param.update(**dict.fromkeys(MECHANISMS, 0))

    def add_region_choice(self, key: str, label: str) -> None:
        """Offer ``key`` in the region select (a drawn box or an uploaded polygon) and select it."""
        names = dict(self.param.region.names or {})
        names = {lab: k for lab, k in names.items() if k != key}
        names[label] = key
        self.param.region.objects = names  # assign a new dict: never mutate a shared list in place
        self.region = key
