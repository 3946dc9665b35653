"""The dashboard's own CSS, written against Panel's theme variables so the light and the dark theme
(``?theme=dark``) both read well: colours come from ``--panel-*`` custom properties, which Panel's theme
stylesheet defines in every component's shadow root, with the light theme's values as fallbacks."""

from __future__ import annotations

#: The theme's text colour (white on the dark theme)
ON_BACKGROUND = "var(--panel-on-background-color, #1f2328)"

#: Body text a little softer than headings: the theme's text colour at 85 % (Panel's theme variables
#: reach inside every component's shadow root, so this reads on the light and on the dark theme)
TEXT = f"color-mix(in srgb, {ON_BACKGROUND} 85%, transparent)"

#: Secondary text (labels, notes, provenance): the theme's text colour at 72 % (WCAG contrast >= 4.5:1 on
#: both themes: 5.8 on the light cards, 7.7 on the dark ones)
MUTED = f"color-mix(in srgb, {ON_BACKGROUND} 72%, transparent)"

CSS = f"""
.proda-card {{ border-radius: 8px; padding: 8px 12px; background: var(--panel-surface-color, #f6f8fa);
              border: 1px solid var(--panel-border-color, #d0d7de); min-width: 150px; }}
.proda-card-title {{ font-size: 0.8em; color: {MUTED}; text-transform: uppercase; letter-spacing: 0.03em; }}
.proda-card-value {{ font-size: 1.45em; font-weight: 600; color: var(--panel-on-surface-color, #1f2328);
                    white-space: nowrap; }}
.proda-card-sub {{ font-size: 0.8em; color: {MUTED}; }}
.proda-card.up .proda-card-value {{ color: var(--success-text-color, #1a7f37); }}
.proda-card.down .proda-card-value {{ color: var(--danger-text-color, #cf222e); }}
.proda-provenance {{ font-size: 0.85em; color: {MUTED}; padding: 2px 4px; }}
"""

#: Bokeh's tab strip keeps a near-black label on the active tab whatever the theme: use the theme's text colour
TABS_CSS = f".bk-tab.bk-active {{ color: {ON_BACKGROUND}; }}"
