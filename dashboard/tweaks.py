"""Every private Panel/Bokeh speed or safety tweak of the dashboard, in one place.

Each tweak leans on a private attribute of the pinned versions (Panel 1.9, Bokeh 3.x); each has a test
in ``tests/dashboard/test_tweaks.py`` that fails when the attribute it relies on disappears or changes
shape, so an upgrade breaks a test instead of silently slowing (or breaking) the page.

* :class:`StepSlider` -- ``Reactive._debounce`` (a slider step is handled at once, not 50 ms later);
* :class:`DashboardTemplate` -- ``BaseTemplate._init_doc`` (roots attached inside one frozen model set,
  live panes settled before the page is sent) and ``_get_theme_from_query_args`` (an unknown ``?theme=``
  no longer fails the page);
* :func:`drop_location_sync` -- ``Location._update_synced`` (the browser's raw query is not re-parsed).
"""

from __future__ import annotations

from typing import ClassVar

import panel as pn
import param
from panel.io.state import set_curdoc
from panel.theme import THEMES


class StepSlider(pn.widgets.IntSlider):
    """An integer slider whose changes the server handles at once.

    Panel waits ``_debounce`` (50 ms) after a browser change before processing it, to batch rapid
    events; a throttled slider sends one change per key press or release, so the wait was pure
    latency on every what-if step (measured in the browser: the URL update came ~75 ms after the key).
    """

    _debounce: ClassVar[int] = 0


class DashboardTemplate(pn.template.FastListTemplate):
    """FastListTemplate that attaches its ~30 roots to a session document in one go.

    Bokeh re-walks the document's whole model graph (~420 models) after every ``add_root`` unless the
    document's model set is frozen; the template adds each sidebar and main item as its own root, so a
    new session paid ~30 full walks (about half of the server's page build, profiled). Inside one
    ``freeze()`` the walk happens once, when the last root is in.
    """

    #: Panes whose model is re-rendered on every slider step (the cards); see :meth:`_settle`.
    live_panes = param.List(default=[], doc="Panes updated on every step, settled when the page is built.")

    @staticmethod
    def _get_theme_from_query_args() -> str | None:
        """``?theme=`` only when it names a theme: Panel's template looks any value up in ``THEMES``,
        and an unknown one (``?theme=<script>``) failed the whole page with a ``KeyError``."""
        theme = pn.template.FastListTemplate._get_theme_from_query_args()
        return theme if theme in THEMES else None

    def _init_doc(self, doc=None, comm=None, title=None, notebook=False, location=True):
        target = doc if doc is not None else pn.state.curdoc
        if target is None:
            return super()._init_doc(doc, comm, title, notebook, location)
        with target.models.freeze():
            out = super()._init_doc(target, comm, title, notebook, location)
        # models know their document only once the frozen set is recomputed; the settle needs it
        with target.models.freeze(), set_curdoc(target):
            self._settle()
        return out

    def _settle(self) -> None:
        """Re-apply each live pane's properties once while the page is still being built.

        Panel's first update of an HTML pane after the template rendered it adds the theme's
        stylesheet (an ``ImportedStyleSheet`` model): a new model reference, so Bokeh re-walked all
        ~420 models of the document once per card on the first slider step after a page load
        (~80-130 ms each, ~0.6 s for the step; profiled) and the browser re-applied the styles. Done
        here, before the page is sent and inside one frozen model set, it costs one walk (~80 ms).
        """
        for pane in self.live_panes:
            pane.param.trigger("object")


def drop_location_sync(loc) -> int:
    """Remove Panel's ``Location._update_synced`` watcher on ``search`` (returns how many were removed).

    When the page connects, the browser reports its raw query; that watcher parses it for
    ``location.sync`` (unused here) with ``parse_query``, which raised on values like ``"²"``.
    """
    removed = 0
    for watcher in list(loc.param.watchers.get("search", {}).get("value", [])):
        if getattr(watcher.fn, "__name__", "") == "_update_synced":
            loc.param.unwatch(watcher)
            removed += 1
    return removed
