"""The views are declarative (issue 18 item 6): each is a ``pn.viewable.Viewer`` whose panes follow the
store's and state's parameters through references (``pn.bind`` / ``param.depends``), not hand-written
watchers. These tests change the parameters directly and check the rendered Bokeh models follow."""

from __future__ import annotations

import panel as pn
import pytest
from bokeh.document import Document

from dashboard.safe import escape


@pytest.fixture()
def app(world):
    from dashboard.app import build_app

    return build_app(world)


def _title(root) -> str:
    """The title text of the (single) Bokeh figure under ``root``."""
    from bokeh.models import Plot

    plot = next(iter(root.select({"type": Plot})))
    return plot.title.text


def _axis_labels(root) -> list[str]:
    """The axis labels of the Bokeh figure(s) under ``root``."""
    from bokeh.models import Axis

    return [str(a.axis_label) for a in root.select({"type": Axis})]


def test_every_view_is_a_viewer_and_renders(app):
    for view in (app.controls, app.totals, app.profile, app.sensitivity, app.scatter, app.scenario):
        assert isinstance(view, pn.viewable.Viewer), type(view)
        root = pn.panel(view).get_root(Document())
        assert root is not None


def test_cards_and_ensemble_follow_the_store(app):
    store = app.store
    ensemble_model = app.totals.ensemble.get_root(Document())
    total = app.totals.cards["total"]
    model = total.get_root(Document())  # the card's own model
    before = total.object
    app.state.A = 10
    assert total.object != before and "Pg C" in total.object and model.text != ""
    assert "synthetic twin world" in app.totals.provenance.object
    assert not app.totals.ensemble.visible
    store.ensemble = {"mean_pg": 1234.5, "sd_pg": 12.0, "n_members": 3}
    assert app.totals.ensemble.visible and "1,234 ± 12 Pg C" in app.totals.ensemble.object
    assert escape(f"3 members (mean ± s.d.), {app.state.depth}") in app.totals.ensemble.object
    assert "1,234" in ensemble_model.text and ensemble_model.visible  # the rendered model follows too
    store.ensemble = None
    assert not app.totals.ensemble.visible and not ensemble_model.visible


def test_realised_lines_follow_the_result(app):
    line = app.controls.realised["NPP"]
    assert "unchanged" in line.object
    app.state.NPP = 10
    assert "% → SOC" in line.object and "unchanged" not in line.object


def test_variable_select_and_state_stay_in_step(app):
    select = app.controls.variable
    select.value = "cue"  # the browser's choice reaches the state (a link)
    assert app.state.variable == "cue" and app.store.layer.variable == "cue"
    app.state.variable = "turnover"  # a state change (a shared link, ...) reaches the widget
    assert select.value == "turnover"


def test_profile_figure_follows_tap_and_clear(app):
    root = app.profile.pane.get_root(Document())
    assert _title(root) == "SOC profile: tap the map"
    app.store.set_tap(7.1, 46.3)
    assert _title(root).startswith("SOC profile at")
    app.store.param.update(profile=None, profile_baseline=None)
    assert _title(root) == "SOC profile: tap the map"


def test_sensitivity_and_scatter_redraw_from_the_store(app):
    sens_root = app.sensitivity.pane.get_root(Document())
    labels = app.sensitivity.labels
    fake = {m: {"plus1pct_pg": float(i) - 2.0, "plus1pct_sd_pg": 0.1, "n_members": 3}
            for i, m in enumerate(labels)}
    app.store.param.update(sensitivity=fake, sensitivity_note="")
    # the title says what and where (short: Bokeh titles do not wrap); the value axis says the error bars
    assert _title(sens_root) == f"+1 % effects · {app.store.result.totals['region']}, {app.state.depth}"
    assert any(label.endswith("(Pg C), ± s.d. of 3 members") for label in _axis_labels(sens_root)), \
        _axis_labels(sens_root)
    app.store.param.update(sensitivity=None)
    assert _title(sens_root).startswith("+1 % effects: computing")

    scat_root = app.scatter.pane.get_root(Document())
    app.store.want_comparison = True  # the tab is on screen: the comparison is computed
    assert app.store.comparison is not None and len(app.store.comparison[0])
    assert "sites): E =" in _title(scat_root)
    app.store.comparison = None
    assert _title(scat_root) == "observed vs modelled: no sites in this region"


def test_scenario_controls_follow_the_run_state(app):
    sc = app.scenario
    assert sc.button.label == "Run scenario" and not sc.button.disabled and not sc.bar.visible
    sc.param.update(running=True, progress=40)
    assert sc.button.label == "Running…" and sc.button.disabled
    assert sc.bar.visible and sc.bar.value == 40 and "40 %" in sc.summary.object
    sc.param.update(running=False, message="boom")
    assert sc.button.label == "Run scenario" and not sc.bar.visible
    assert sc.summary.object == "**Scenario failed:** boom"
