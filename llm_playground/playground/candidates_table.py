"""What the model considered for one generated token: its candidates before and after each filter.

`CandidatesTable` draws one `TokenChoice` (model/engine/token_choice.py): a line naming the token
and the probability it was drawn with, a line with the entropy and the number of ids left after
each stage, then a table whose rows are candidates (best in the distribution drawn from first,
then those the filters removed, by the model's probability) and whose columns are the stages
in the order the sampler applied them (model, repetition penalty, temperature, top-k, top-p,
min-p; greedy: the argmax). The drawn row is marked ▶; a probability a stage set to zero
(removed) reads "—", one that merely rounds to zero "<0.1%".

It formats only: every figure is read from the choice, none is computed here.
"""
from __future__ import annotations

from typing import Callable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from llm_playground.model.engine.token_choice import STAGE_LABELS, TokenChoice
from llm_playground.playground.token_spans import visible

HINT = "Click a token above (or focus the strip and use ←/→) to see what the model considered."


def percent(p: float) -> str:
    """A probability as the table shows it: "43.1%", "<0.1%" (tiny), "—" (removed, exactly 0)."""
    if p <= 0.0:
        return "—"
    if p < 0.0005:
        return "<0.1%"
    return f"{100 * p:.1f}%"


def token_label(token_id: int, id_to_bytes: Callable[[int], bytes], is_special: Callable[[int], bool]) -> str:
    """A candidate as text: quoted with visible whitespace, a special token by its name, bytes
    that are not whole UTF-8 characters as escapes."""
    raw = id_to_bytes(token_id)
    if is_special(token_id):
        return raw.decode("utf-8", errors="replace")
    try:
        return "'" + visible(raw.decode("utf-8")).replace("\n", "") + "'"
    except UnicodeDecodeError:
        return repr(raw)[1:]


class CandidatesTable(Static):
    """One token's candidates per filter stage (see the module doc)."""

    COMPONENT_CLASSES = {"candidates-table--drawn", "candidates-table--removed", "candidates-table--head"}
    DEFAULT_CSS = """
    CandidatesTable { height: auto; }
    CandidatesTable > .candidates-table--drawn { color: $text-accent; text-style: bold; }
    CandidatesTable > .candidates-table--removed { color: $text-muted; }
    CandidatesTable > .candidates-table--head { color: $text-muted; text-style: bold; }
    """

    def __init__(self, max_rows: int = 10, **kwargs) -> None:
        super().__init__(HINT, **kwargs)
        self.max_rows = max_rows
        self.choice: TokenChoice | None = None
        self.position: int | None = None

    def clear(self) -> None:
        """Show the hint instead of a token."""
        self.choice, self.position = None, None
        self.update(HINT)

    def show(self, choice: TokenChoice, position: int, id_to_bytes: Callable[[int], bytes],
             is_special: Callable[[int], bool]) -> None:
        """Draw `choice`, the token at `position` (0-based) of its reply."""
        self.choice, self.position = choice, position
        label = lambda t: token_label(t, id_to_bytes, is_special)   # noqa: E731
        drawn_style = self.get_component_rich_style("candidates-table--drawn", partial=True)
        removed_style = self.get_component_rich_style("candidates-table--removed", partial=True)
        head_style = self.get_component_rich_style("candidates-table--head", partial=True)
        probs = choice.probs                                                     # (S, C)
        d = choice.drawn_index
        title = Text.assemble(
            f"token {position + 1}: ", (label(choice.token_id), drawn_style), f" (id {choice.token_id})",
            f" drawn with p {percent(float(probs[-1, d]))}",
            f" · model gave it {percent(float(probs[0, d]))}" if len(choice.stages) > 1 else "")
        stages = [STAGE_LABELS.get(s, s) for s in choice.stages]
        flow = Text.assemble(
            ("entropy ", head_style), " → ".join(f"{h:.2f}" for h in choice.entropy), " nats · ",
            ("ids left ", head_style), " → ".join(f"{int(k):,}" for k in choice.kept))
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style=head_style, expand=False)
        table.add_column("", width=1)
        table.add_column("candidate", no_wrap=True, max_width=16, overflow="ellipsis")
        table.add_column("id", justify="right")
        for name in stages:
            table.add_column(name, justify="right")
        rows = list(range(min(self.max_rows, len(choice.candidate_ids))))
        if d not in rows:                       # the drawn id is always shown
            rows[-1] = d
        for j in rows:
            tid = int(choice.candidate_ids[j])
            removed = probs[-1, j] <= 0
            style = drawn_style if j == d else (removed_style if removed else None)
            cells = [percent(float(p)) for p in probs[:, j]]
            table.add_row("▶" if j == d else "", label(tid), str(tid), *cells, style=style)
        more = len(choice.candidate_ids) - len(rows)
        footer = Text(f"{more} more candidate(s) not shown", style=removed_style) if more > 0 else Text("")
        self.update(Group(title, flow, table, footer))
