"""Every private Panel/Bokeh speed or safety tweak of the dashboard, in one place.

Each tweak leans on a private attribute of the pinned versions (Panel 1.9, Bokeh 3.x); each has a test
in ``tests/dashboard/test_tweaks.py`` that fails when the attribute it relies on disappears or changes
shape, so an upgrade breaks a test instead of silently slowing (or breaking) the page.

* :class:`StepSlider` -- ``Reactive._debounce`` (a slider step is handled at once, not 50 ms later);
* :class:`DashboardTemplate` -- ``BaseTemplate._init_doc`` (roots attached inside one frozen model set,
  live panes settled before the page is sent);
* :func:`drop_location_sync` -- ``Location._update_synced`` (the browser's raw query is not re-parsed);
* :func:`skip_mathjax_for_html_panes` -- ``panel.io.resources._panel_use_mathjax`` (no 1.8 MB MathJax
  bundle because the page has Markdown/HTML panes);
* :func:`session_document` -- ``panel.io.state._state._curdoc`` (the session document of this thread's
  context only, never another thread's).
"""

from __future__ import annotations

from typing import ClassVar

import panel as pn
import param
from panel.io.state import set_curdoc


class StepSlider(pn.widgets.IntSlider):
    """An integer slider whose changes the server handles at once.

    Panel waits ``_debounce`` (50 ms) after a browser change before processing it, to batch rapid
    events; a throttled slider sends one change per key press or release, so the wait was pure
    latency on every what-if step (measured in the browser: the URL update came ~75 ms after the key).
    """

    _debounce: ClassVar[int] = 0


class DashboardTemplate(pn.template.VanillaTemplate):
    """Panel's plain template, attaching its ~30 roots to a session document in one go.

    Vanilla rather than FastListTemplate (the template until issue 16's fourth pass): the same page
    without the FAST web components (0.9 MB of JavaScript and its design-token work, ~0.1 s of the
    page's main thread), measured 5 of 5 paired rounds faster, median 1.80 s against 2.00 s for a first
    page (docs/dashboard.md, "Many viewers at once"). The theme comes from the app's checked ``?theme=``
    (FastListTemplate read the raw query itself, and an unknown value failed the page).

    Bokeh re-walks the document's whole model graph (~420 models) after every ``add_root`` unless the
    document's model set is frozen; the template adds each sidebar and main item as its own root, so a
    new session paid ~30 full walks (about half of the server's page build, profiled). Inside one
    ``freeze()`` the walk happens once, when the last root is in.
    """

    #: Panes whose model is re-rendered on every slider step (the cards); see :meth:`_settle`.
    live_panes = param.List(default=[], doc="Panes updated on every step, settled when the page is built.")

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


def skip_mathjax_for_html_panes() -> bool:
    """Stop Panel loading Bokeh's MathJax bundle only because the page has Markdown or HTML panes.

    Panel adds ``bokeh-mathjax.min.js`` (1.8 MB) to any page with a Panel HTML model, in case its text
    holds LaTeX; the dashboard's text never does (and text from outside is escaped: a ``$...$`` in an
    uploaded name now shows as typed instead of being typeset). Bokeh's own check (a model that declares
    TeX, e.g. an axis label) still loads it. Measured on the default world, 30 single page loads each,
    paired rounds: median 1.54 s against 1.62 s from the navigation to interactive (4 of 5 rounds lower).
    Returns True when the hook was found and replaced (idempotent).
    """
    from panel.io import resources

    if not callable(getattr(resources, "_panel_use_mathjax", None)):
        return False
    resources._panel_use_mathjax = _no_panel_mathjax
    return True


def _no_panel_mathjax(roots) -> bool:
    """Panel's "an HTML model may need MathJax" check, answered no (see :func:`skip_mathjax_for_html_panes`)."""
    return False


def session_document():
    """The Bokeh document of the Panel session being built or served in this context, or ``None``.

    ``pn.state.curdoc`` first reads Panel's context-local document and then falls back to Bokeh's
    ``curdoc()``, whose stack of patched documents is process-wide: on a thread with no session it can
    return the session another thread is building (tests/dashboard/test_sessions.py reproduces it: an app
    built beside a server took itself for served and solved in the background). Panel sets the
    context-local document for every session it builds, function and script apps alike, and for its
    callbacks, so that one alone answers "am I served?".
    """
    doc = pn.state._curdoc.get()
    return doc if doc is not None and doc.session_context is not None else None
