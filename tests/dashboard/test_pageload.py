"""Page load (issue 16): a new session builds only what its first screen shows; the charts that say "nothing
yet" (the climate scenario before a run, the profile before a tap) are built when there is something to show."""

from __future__ import annotations

import panel as pn
import pytest
from bokeh.document import Document
from bokeh.models import Plot


@pytest.fixture
def app(world):
    from dashboard.app import build_app

    return build_app(world)


def _plots(root) -> list[Plot]:
    return list(root.select({"type": Plot}))


def test_scenario_charts_join_their_row_with_the_first_result(app):
    sc = app.scenario
    row = sc.panel()
    charts = next(o for o in row.objects if "proda-scenario-charts" in o.css_classes)
    root = row.get_root(Document())
    assert len(charts) == 0 and _plots(root) == []  # no empty trajectory or change map before a run
    sc.param.update(warming=2.0, npp=0, horizon=10, amplified=False)
    sc.run()
    assert sc.message == "" and sc.result is not None
    assert list(charts.objects) == [sc.trajectory, sc.map]
    assert len(_plots(root)) == 2  # the rendered row follows (the trajectory and the change map)


def test_profile_chart_replaces_its_hint_at_the_first_tap(app):
    slot = app.profile_slot
    root = slot.get_root(Document())
    assert isinstance(slot.objects[0], pn.pane.Markdown) and "tap the map" in slot.objects[0].object
    assert _plots(root) == []
    app.store.set_tap(7.1, 46.3)
    assert slot.objects[0] is app.profile.pane
    (plot,) = _plots(root)
    assert plot.title.text.startswith("SOC profile at")


def test_tune_gc_spaces_full_collections_only():
    """The server's full collections wait for more young ones; the young generations stay as they were."""
    import gc

    from dashboard.app import GC_FULL_EVERY, tune_gc

    before = gc.get_threshold()
    try:
        assert tune_gc(3) == before
        assert gc.get_threshold() == (before[0], before[1], 3)
        tune_gc()
        assert gc.get_threshold()[2] == GC_FULL_EVERY > 10  # CPython's default is 10
        assert gc.isenabled()  # spaced, never switched off
    finally:
        gc.set_threshold(*before)
