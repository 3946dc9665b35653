"""Outside text is shown as text: the one escaping helper, and the checks on what a link may carry.

Anything that comes from outside the code (URL query values, uploaded file names and contents, GeoJSON
properties, catalog labels, file and variable names inside error messages) may be written by someone
who wants it to run in a viewer's browser. Panel renders Markdown panes (the alert), HTML panes (the
cards) and notifications as HTML, and Markdown passes inline HTML through. So:

* every message, notification and HTML/Markdown pane that may carry outside text gets it through
  :func:`escape`, which turns it into inert text in both HTML and Markdown;
* Bokeh properties that are drawn as text (plot titles, axis labels, select option labels) get
  :func:`plain` (control characters removed, length bounded): escaping them would show ``&#60;``;
* a URL query is read raw (:func:`url_query`), never through Panel's ``parse_query`` (which turns
  ``"²"`` into an exception and ``"[...]"`` into Python objects), and each value is checked by the
  state (:meth:`dashboard.state.DashboardState.validate_query`) before it is used.

Example::

    >>> escape('<img src=x onerror="alert(1)">')
    '&#60;img src&#61;x onerror&#61;&#34;alert&#40;1&#41;&#34;&#62;'
    >>> plain("a\\nb\\x00c")
    'a bc'
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping

#: Longest outside text shown in one piece (characters); longer text is cut with an ellipsis.
MAX_TEXT = 300

#: Longest URL query value considered at all (a box key is ~40 characters, a region key ~30).
MAX_QUERY_VALUE = 200

#: Most query fields read from a URL (the state has 11; Panel and the browser may add a few).
MAX_QUERY_FIELDS = 50

#: ASCII characters left as they are by :func:`escape`: letters, digits and punctuation that means
#: nothing in HTML or Markdown. Every other ASCII character becomes a numeric character reference,
#: which HTML and Markdown both show as the character itself and never parse as markup, links, math
#: (``$``), emoji (``:name:``) or autolinks (``@``, ``://``).
_INERT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.;?%/")

#: Unicode categories dropped by :func:`plain`: controls, format characters (bidi overrides,
#: zero-width joiners), line/paragraph separators, surrogates, private use and unassigned.
_DROPPED = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"))

_INTEGER = re.compile(r"[+-]?[0-9]{1,4}")


def plain(value: object, limit: int = MAX_TEXT) -> str:
    """Outside text as one bounded line of plain text (for places drawn as text, e.g. Bokeh titles).

    Control and format characters are dropped, any run of whitespace becomes one space, and text
    longer than ``limit`` characters is cut with ``…``. Not escaped: use :func:`escape` for HTML.
    """
    text = "" if value is None else str(value)
    kept = []
    for ch in text:
        if ch in "\t\n\r\f\v":
            kept.append(" ")
        elif unicodedata.category(ch) not in _DROPPED:
            kept.append(ch)
    text = " ".join("".join(kept).split())
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def escape(value: object, limit: int = MAX_TEXT) -> str:
    """Outside text made inert for HTML *and* Markdown: the one escaping helper.

    :func:`plain` first (one line, bounded), then every ASCII character outside letters, digits and
    `` ,.;?%/`` becomes a numeric character reference (``<`` -> ``&#60;``). Browsers and Markdown show
    the text unchanged, as text: no tag, attribute, entity, link, emphasis, code span or math
    survives. Non-ASCII characters (``°``, ``−``, ``é``) pass unchanged: none is markup.
    """
    return "".join(ch if ch in _INERT or not ch.isascii() else f"&#{ord(ch)};" for ch in plain(value, limit))


def url_query(search: str | None) -> dict[str, str]:
    """The raw query of a URL (``"?a=1&b=x"``) as strings; the last value of a repeated key wins.

    Never raises: a query with more than :data:`MAX_QUERY_FIELDS` fields or that cannot be parsed
    gives ``{}`` (the defaults). Values are not interpreted here: the state checks each key.
    """
    text = (search or "").lstrip("?")
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        return {}
    return dict(pairs)


def checked_query(query: Mapping[str, str], keys: Mapping[str, str],
                  check: Callable[[str, str], object]) -> tuple[dict[str, object], list[str]]:
    """(values to apply, ignored URL keys) of the ``keys`` (parameter name -> URL key) present in ``query``.

    Each raw value goes through ``check(name, raw)``; a non-string, one longer than
    :data:`MAX_QUERY_VALUE` or one ``check`` refuses with ``ValueError`` leaves its key ignored (the
    parameter keeps its default). Nothing raises.
    """
    values: dict[str, object] = {}
    ignored: list[str] = []
    for name, key in keys.items():
        if key not in query:
            continue
        raw = query[key]
        try:
            if not isinstance(raw, str) or len(raw) > MAX_QUERY_VALUE:
                raise ValueError("too long")
            values[name] = check(name, raw)
        except ValueError:
            ignored.append(key)
    return values, ignored


def parse_percent(text: str, bounds: tuple[int, int]) -> int:
    """A whole percent from a URL (``"5"``, ``"-10"``, ``"+3"``) within ``bounds``; ``ValueError`` otherwise.

    Only ASCII digits count (``"²"``, ``"1e3"``, ``"nan"``, ``"5.5"`` are refused).
    """
    if not isinstance(text, str) or not _INTEGER.fullmatch(text):
        raise ValueError("not a whole percent")
    value = int(text)
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"outside {bounds[0]}..{bounds[1]}")
    return value


def parse_flag(text: str) -> bool:
    """``true``/``false`` (as Panel writes booleans into the URL; also ``1``/``0``); ``ValueError`` otherwise."""
    lowered = text.strip().lower() if isinstance(text, str) else ""
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError("not true or false")


def ignored_notice(keys: list[str]) -> str:
    """The one plain-text notice for URL keys whose values were not used (names the keys, never the values)."""
    names = ", ".join(dict.fromkeys(keys))
    return (f"Link settings ignored (unknown or malformed value): {names}. "
            "The defaults are shown for them.")
