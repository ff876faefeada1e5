"""Update a widget that changes often without a screen layout each time.

A Textual layout reflows the whole screen (about 6-10 ms of the UI thread on a 2-core machine,
time the engine thread then waits for: the two share the GIL and the cores). `Static.update` asks
for one by default, in case the size changed. `update_in_place` asks only when the new content's
wrapped height differs from the widget's current height; otherwise the widget repaints its own
region. With `reserve=k` (text that only grows while it streams) the widget keeps k spare lines
below its text (its min-height): it asks for a layout when the text outgrows them, about once
every k + 1 lines instead of every line, or when it shrank by more than k lines. Used for what
changes at the publishing rate while an answer streams (the open block of an answer, token
spans, the stats strip).

Nothing else here: no widgets, no timers.
"""
from __future__ import annotations

from typing import Any

from textual.visual import visualize
from textual.widgets import Static


def update_in_place(widget: Static, content: Any, markup: bool = False, reserve: int = 0) -> bool:
    """`widget.update(content)`, with a layout only when the wrapped height changes (or the
    widget has no width yet, or is hidden); `reserve`: see the module doc (the widget's
    min-height is set; `release` takes it back). `markup`: parse str content as markup.
    Returns whether a layout was asked for."""
    width, height = widget.content_size
    same = False
    if width and widget.display:
        visual = visualize(widget, content, markup=markup)
        needed = visual.get_height(widget.styles, width)
        if reserve > 0:
            same = height - reserve <= needed <= height
            if not same:
                widget.styles.min_height = needed + reserve
        else:
            same = needed == height
    widget.update(content, layout=not same)
    return not same


def release(widget: Static) -> None:
    """Take back the spare lines `update_in_place(..., reserve=k)` kept (the text is final)."""
    if widget.styles.min_height is not None:
        widget.styles.min_height = None
