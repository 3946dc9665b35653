"""The map's own shareable state: projection, compare mode, demo mode and demo step (URL keys).

Kept beside :class:`~dashboard.state.DashboardState` (whose URL keys are the selection) and checked the
same way: each raw URL string is validated (:meth:`GeoState.validate_query`, never raises) and only
values that differ from the world's defaults are written back (:meth:`GeoState.url_query`), so links
without them stay as they were.

The default projection is Equal Earth for a global world and Plate Carrée (the plain lon/lat map,
:class:`~dashboard.views.map.MapView`) for a regional one, where an equal-area world map would shrink
the region to a corner.
"""

from __future__ import annotations

from collections.abc import Mapping

import param

from dashboard.geo import DEFAULT_PROJECTION, PROJECTIONS
from dashboard.safe import checked_query, parse_flag

#: URL keys of this state (parameter name -> query key).
GEO_URL_PARAMS: dict[str, str] = {"projection": "projection", "compare": "compare", "demo": "demo", "step": "step"}

#: Compare modes (URL values): off, side by side, difference.
COMPARE_MODES = ("off", "side", "diff")

#: Steps of the demo sequence a URL may ask for (``dashboard.views.demo.STEPS`` has this many or fewer).
MAX_DEMO_STEP = 9


def default_projection(extent: tuple[float, float, float, float]) -> str:
    """Equal Earth for a world spanning > 300° of longitude, Plate Carrée for a regional one."""
    lon0, lon1, _, _ = extent
    return DEFAULT_PROJECTION if lon1 - lon0 > 300 else "plate_carree"


class GeoState(param.Parameterized):
    """Projection, compare mode and demo mode of one session."""

    projection = param.Selector(default=DEFAULT_PROJECTION, objects={v: k for k, v in PROJECTIONS.items()},
                                label="Map projection")
    compare = param.Selector(default="off", objects=list(COMPARE_MODES))
    demo = param.Boolean(default=False)
    step = param.Integer(default=1, bounds=(1, MAX_DEMO_STEP))

    def __init__(self, extent: tuple[float, float, float, float] | None = None, **params) -> None:
        if extent is not None and "projection" not in params:
            params["projection"] = default_projection(extent)
        super().__init__(**params)
        self._defaults = {name: getattr(self, name) for name in GEO_URL_PARAMS}

    def validate_query(self, query: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
        """(values to apply, ignored keys) from raw URL strings; nothing raises."""
        return checked_query(query, GEO_URL_PARAMS, lambda name, raw: self._check(name, raw.strip("'\"")))

    @staticmethod
    def _check(name: str, raw: str) -> object:
        if name == "projection":
            if raw not in PROJECTIONS:
                raise ValueError("unknown projection")
            return raw
        if name == "compare":
            if raw not in COMPARE_MODES:
                raise ValueError("unknown compare mode")
            return raw
        if name == "demo":
            return parse_flag(raw)
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_DEMO_STEP:
            raise ValueError("step out of range")
        return int(raw)

    def url_query(self) -> dict[str, str]:
        """Only the values that differ from this session's defaults (``demo`` as ``1``)."""
        out = {}
        for name, key in GEO_URL_PARAMS.items():
            value = getattr(self, name)
            if value == self._defaults[name] and not (name == "step" and self.demo):
                continue
            out[key] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out
