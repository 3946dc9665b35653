"""One test per private Panel/Bokeh attribute the dashboard's tweaks (dashboard/tweaks.py) rely on:
each fails when an upgrade removes or reshapes it, instead of the page silently getting slower."""

from __future__ import annotations

import inspect

import panel as pn
import param
from bokeh.document import Document
from panel.io.location import Location
from panel.reactive import Syncable

from dashboard.tweaks import DashboardTemplate, StepSlider, drop_location_sync


def test_step_slider_relies_on_reactive_debounce():
    assert isinstance(Syncable.__dict__.get("_debounce"), int), "panel.reactive.Syncable._debounce is gone"
    # still the delay of the timeout callback that processes a browser change
    assert "add_timeout_callback(cb, self._debounce)" in inspect.getsource(Syncable._server_change)
    assert pn.widgets.IntSlider._debounce > 0 and StepSlider._debounce == 0


def test_template_relies_on_init_doc():
    base = pn.template.VanillaTemplate
    sig = inspect.signature(base._init_doc)
    assert list(sig.parameters)[:6] == ["self", "doc", "comm", "title", "notebook", "location"]
    # the theme is a parameter the app sets from its checked query (no template reads the raw query)
    assert DashboardTemplate(title="t", theme="dark").theme.__name__ == "DarkTheme"


def test_template_relies_on_bokeh_frozen_model_set():
    doc = Document()
    with doc.models.freeze():  # bokeh.document.models.DocumentModelManager.freeze
        pass
    tmpl = DashboardTemplate(title="t", main=[pn.pane.HTML("x")], live_panes=[])
    tmpl.server_doc(doc)  # _init_doc inside freeze(): every root attached, the model set recomputed
    assert len(doc.roots) > 1 and all(root.document is doc for root in doc.roots)


def test_live_panes_are_settled_when_the_page_is_built():
    card = pn.pane.HTML("card")
    seen = []
    card.param.watch(lambda e: seen.append(e.new), "object")
    DashboardTemplate(title="t", main=[card], live_panes=[card]).server_doc(Document())
    assert seen == ["card"]


def test_location_sync_watcher_is_found_and_removed():
    assert callable(getattr(Location, "_update_synced", None)), "panel Location._update_synced is gone"
    loc = Location()
    names = [w.fn.__name__ for w in loc.param.watchers.get("search", {}).get("value", [])]
    assert "_update_synced" in names
    assert drop_location_sync(loc) == 1
    assert drop_location_sync(loc) == 0

    class Target(param.Parameterized):
        x = param.Integer(0)

    loc.search = "?x=%C2%B2"  # Panel's watcher would parse this for location.sync and raise
    assert Target().x == 0


def test_mathjax_hook_is_found_and_html_panes_no_longer_load_mathjax():
    from bokeh.resources import Resources
    from panel.io import resources

    from dashboard.tweaks import skip_mathjax_for_html_panes

    assert skip_mathjax_for_html_panes()  # the private hook exists and was replaced
    assert "enable_mathjax" in inspect.signature(resources.bundle_resources).parameters
    doc = Document()
    doc.add_root(pn.pane.Markdown("**SOC** 1,258 Pg C").get_root(doc))
    js = [str(f) for f in resources.bundle_resources(doc.roots, Resources(mode="server")).js_files]
    assert any("bokeh.min.js" in f for f in js) and not any("mathjax" in f for f in js)
    # Panel still loads it when asked to (the check is Panel's, the answer ours)
    forced = resources.bundle_resources(doc.roots, Resources(mode="server"), enable_mathjax=True).js_files
    forced = [str(f) for f in forced]
    assert any("mathjax" in f for f in forced)


def test_session_document_reads_panels_context_local_document_only():
    import threading

    from bokeh.document import Document
    from bokeh.io.doc import patch_curdoc
    from panel.io.state import set_curdoc

    from dashboard.tweaks import session_document

    assert session_document() is None  # no session here
    doc = Document()  # a document outside any server session is not a session either
    with set_curdoc(doc):
        assert pn.state._curdoc.get() is doc and session_document() is None
    # Bokeh's patched stack is process-wide: what another thread patches shows in pn.state.curdoc's
    # fallback here (the reason for the tweak), never in session_document()
    seen, inside, done = {}, threading.Event(), threading.Event()

    def other_thread():
        with patch_curdoc(doc):
            inside.set()
            done.wait(10)

    t = threading.Thread(target=other_thread)
    t.start()
    try:
        assert inside.wait(10)
        from bokeh.io import curdoc

        seen["bokeh"] = curdoc()
        seen["ours"] = session_document()
    finally:
        done.set()
        t.join(10)
    assert seen["bokeh"] is doc and seen["ours"] is None
