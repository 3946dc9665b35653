"""Outside text stays text, a link's values are checked, uploads are refused before they can hurt,
and serving beyond loopback is explicit (no browser: ``test_security.py`` runs the same in Chromium)."""

from __future__ import annotations

import html
import json

import pytest

from dashboard.safe import MAX_TEXT, escape, ignored_notice, parse_flag, parse_percent, plain, url_query

PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=\"alert('x')\">",
    "\"><svg onload=alert(1)>",
    "[click](javascript:alert(1)) ![i](x) <http://evil.example>",
    "**bold** `code` $x^2$ :smile: a@b.example https://evil.example/?q=1&r=2",
    "&lt;script&gt; &#60;b&#62; &amp;",
    "line one\n# heading\n    code\n- item\n\u202eevil\u200b\x00",
]


def _markdown(text: str) -> str:
    """HTML of ``text`` through the parser Panel's Markdown pane uses (markdown-it, GFM-like, raw HTML on)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("gfm-like").render(text)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_escape_is_inert_in_html_and_markdown(payload):
    out = escape(payload)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out and "\n" not in out
    # HTML shows exactly the plain text
    assert html.unescape(out) == plain(payload)
    # Markdown too: one paragraph of text, no tag, link, emphasis, code, heading or list
    rendered = _markdown(out)
    assert rendered.startswith("<p>") and rendered.rstrip().endswith("</p>") and rendered.count("<") == 2
    assert html.unescape(rendered.strip()[3:-4]) == plain(payload)


def test_plain_drops_controls_and_bounds_length():
    assert plain("a\nb\tc\x00d\u202ee\u200bf") == "a b cdef"
    assert plain(None) == "" and plain(12) == "12"
    long = plain("x" * 1000)
    assert len(long) == MAX_TEXT and long.endswith("…")
    assert escape("é ° − Pg C, 5 %") == "é ° − Pg C, 5 %"  # ordinary text passes unchanged


def test_url_query_reads_raw_strings_and_never_raises():
    assert url_query("?A=5&region=box%3A1%2C2%2C3%2C4&A=6") == {"A": "6", "region": "box:1,2,3,4"}
    assert url_query("") == {} and url_query(None) == {}
    assert url_query("?x=%C2%B2&y=[[[1]]]") == {"x": "²", "y": "[[[1]]]"}  # Panel's parse_query raises on "²"
    assert url_query("?" + "&".join(f"k{i}=1" for i in range(500))) == {}  # too many fields


def test_percent_and_flag_parsing():
    assert parse_percent("5", (-50, 50)) == 5 and parse_percent("-50", (-50, 50)) == -50
    assert parse_percent("+3", (-50, 50)) == 3
    for bad in ("51", "-51", "5.5", "nan", "inf", "1e1", "²", "٣", "", " 5", "0x10", "5%"):
        with pytest.raises(ValueError):
            parse_percent(bad, (-50, 50))
    assert parse_flag("true") is True and parse_flag("FALSE") is False and parse_flag("1") is True
    with pytest.raises(ValueError):
        parse_flag("maybe")


def test_notice_names_keys_not_values():
    assert ignored_notice(["region", "A", "region"]) == (
        "Link settings ignored (unknown or malformed value): region, A. The defaults are shown for them.")


def test_state_validates_every_url_key(world):
    from dashboard.state import URL_PARAMS, DashboardState

    st = DashboardState(world=world)
    good = {"region": "continent:Europe", "depth": "whole", "variable": "param:q10", "sites": "true", "A": "5",
            "K": "-50", "Xi": "50", "V": "0", "I": "1", "NPP": "-10", "source": list(st.param.source.objects)[-1]}
    values, ignored = st.validate_query(good)
    assert ignored == [] and values["A"] == 5 and values["sites"] is True and values["region"] == "continent:Europe"
    # a box is rewritten in canonical form; garbage never passes
    assert st.validate_query({"region": "box:5,7.5,45,48"})[0] == {"region": "box:5.00,7.50,45.00,48.00"}
    payload = "<img src=x onerror=alert(1)>"
    values, ignored = st.validate_query(dict.fromkeys(URL_PARAMS.values(), payload))
    assert values == {} and ignored == list(URL_PARAMS.values())
    for region in ("box:1,2,3", "box:nan,1,2,3", "box:0,10,50,40", "box:1e1,2,3,4", "polygon:1", "box:" + "1" * 300):
        assert st.validate_query({"region": region}) == ({}, ["region"]), region
    assert st.validate_query({"A": "51", "depth": "1m", "unknown": "x"}) == ({}, ["depth", "A"])
    # the inverse: the state as a query that validates to itself
    st.param.update(st.validate_query(good)[0])
    assert st.validate_query(st.url_query()) == ({name: getattr(st, name) for name in URL_PARAMS}, [])


def test_messages_reach_the_page_escaped(world):
    import panel as pn

    from dashboard.app import build_app
    from dashboard.views.totals import card_html

    app = build_app(world)
    payload = "<img src=x onerror=alert(1)>"
    app.store.fail(ValueError(f"unknown region {payload!r}"), "what-if")
    assert app.alert.visible and "<img" not in app.alert.object
    assert html.unescape(app.alert.object) == f"what-if failed: unknown region '{payload}'"
    assert isinstance(app.alert, pn.pane.Markdown) and "<img" not in _markdown(app.alert.object)
    assert "<img" not in card_html(payload, payload, payload, tone=payload)
    # the scenario summary (Markdown) carries the error text escaped
    app.scenario.message = payload
    assert "<img" not in app.scenario.summary.object and "&#60;img" in app.scenario.summary.object


def test_uploads_are_refused_before_they_can_hurt(world):
    from dashboard.store import MAX_JSON_DEPTH, MAX_UPLOAD_BYTES, json_depth, parse_geojson_upload, upload_label

    assert json_depth('{"a": "[[[[{{", "b": [[1, 2]], "c": "\\\\"}') == 3  # strings (and escapes) skipped
    assert json_depth("[" * 10_000, stop_above=MAX_JSON_DEPTH) == MAX_JSON_DEPTH + 1
    ring = [[6.0, 45.5], [8.5, 45.5], [8.5, 47.5], [6.0, 47.5], [6.0, 45.5]]
    ok = {"type": "Feature", "properties": {"name": "<script>alert(1)</script>"},
          "geometry": {"type": "MultiPolygon", "coordinates": [[ring]]}}
    region = parse_geojson_upload(json.dumps(ok).encode(), "<img src=x onerror=alert(1)>.geojson")
    assert region.label == "upload <img src=x onerror=alert(1)>"  # plain text; escaped where HTML shows it
    assert upload_label("a\nb" + "c" * 100 + ".json") == "upload a b" + "c" * 36 + "…"
    refused = {
        b"[" * 200_000 + b"]" * 200_000: "nested deeper",
        b" " * (MAX_UPLOAD_BYTES + 1): "too large",
        b"\xff\xfe": "not UTF-8",
        b'{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [Infinity, 0]]]}': "not a number",
        b'{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}': "at least 4 positions",
        b'{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, true], [0, 0]]]}': "finite numbers",
        b'{"type": "Polygon", "coordinates": [[[0, 0], [181, 0], [1, 1], [0, 0]]]}': "lon/lat degrees",
        b'{"type": "Polygon", "coordinates": "<script>"}': "at least one ring",
        b'{"type": "FeatureCollection", "features": "<script>"}': "Polygon or MultiPolygon",
        b'{"type": "Feature", "geometry": [1]}': "Polygon or MultiPolygon",
    }
    for data, expected in refused.items():
        with pytest.raises(ValueError, match=expected):
            parse_geojson_upload(data, "x.json")


def test_websocket_origins_and_headers():
    from dashboard.app import CONTENT_SECURITY_POLICY, is_loopback, server_options, websocket_origins

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("soil.example.org")
    assert websocket_origins("127.0.0.1", 5006) == ["localhost:5006", "127.0.0.1:5006"]
    assert websocket_origins("192.168.1.5", 80) == ["192.168.1.5:80"]  # a specific address: itself
    assert websocket_origins("0.0.0.0", 5006, ["soil.example.org"]) == ["soil.example.org"]
    with pytest.raises(ValueError, match="host name"):
        websocket_origins("0.0.0.0", 5006)  # all interfaces: the names browsers use must be given
    with pytest.raises(ValueError, match="any web site"):
        websocket_origins("10.0.0.2", 5006, ["*"])
    opts = server_options("127.0.0.1", 5006)
    assert opts["address"] == "127.0.0.1" and len(opts["transforms"]) == 1
    assert "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:;" in CONTENT_SECURITY_POLICY  # no other host
    assert "object-src 'none'" in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY


def test_serve_command_takes_websocket_origins():
    from proda_engine.cli import build_parser

    args = build_parser().parse_args(["serve", "--address", "0.0.0.0", "--allow-websocket-origin", "a.example",
                                      "--allow-websocket-origin", "b.example:8443"])
    assert args.allow_websocket_origin == ["a.example", "b.example:8443"]
    assert build_parser().parse_args(["serve"]).address == "127.0.0.1"


def test_serve_command_takes_server_processes(capsys):
    """`proda serve --num-procs N` reaches dashboard.app.serve (forks N warmed processes); N < 1 is refused
    before any world is built or trained."""
    from proda_engine.cli import build_parser, main

    assert build_parser().parse_args(["serve"]).num_procs == 1
    assert build_parser().parse_args(["serve", "--num-procs", "2"]).num_procs == 2
    assert main(["serve", "--num-procs", "0", "--no-train"]) == 2
    assert "--num-procs must be >= 1, found 0" in capsys.readouterr().err


def test_served_settings_skip_document_validation_unless_asked(monkeypatch):
    """The served app skips Bokeh's per-session developer validation (twice per session); the environment
    variable keeps it, and the value really reaches Bokeh."""
    from bokeh.settings import settings

    from dashboard.app import served_settings

    try:
        monkeypatch.setenv("BOKEH_VALIDATE_DOC", "true")
        assert served_settings() == {} and settings.perform_document_validation() is True
        monkeypatch.delenv("BOKEH_VALIDATE_DOC")
        assert served_settings() == {"perform_document_validation": False}
        assert settings.perform_document_validation() is False
    finally:
        settings.perform_document_validation.unset_value()
    assert settings.perform_document_validation() is True
