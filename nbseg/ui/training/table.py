"""`TableView`: the List tab — the history as a table, significant digits, CSV export."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ...training.callbacks import row_run
from ...training.run import format_value, history_columns, is_partial
from ..style import MessageBox, labelled
from .common import NeedResult, reporting_button, target

#: history columns the table folds into the epoch cell ("5 (7/16)" for a partial epoch)
FOLDED_COLUMNS = ("batches", "epoch_batches")


class TableView:
    """One row per epoch, every history column, floats to ``digits`` significant digits.

    The ``checkpoint`` column marks (◆) the epochs whose state is in the checkpoint cache
    now, i.e. that *Load checkpoint* can load; a partial epoch (Stop ended it early) reads
    ``5 (7/16)``: 7 of its 16 batches trained.

    Attributes: ``digits`` (IntSlider), ``table`` (HTML), ``export_csv_path``,
    ``export_csv_button``, ``widget`` (the tab's box).
    """

    def __init__(
        self, message: MessageBox, need_result: NeedResult, lock: threading.RLock | None = None
    ) -> None:
        self.message = message
        self._need_result = need_result
        self._lock = lock or threading.RLock()
        self._rows: list[dict[str, Any]] = []
        self._loadable: set[tuple[int, int]] = set()
        self.digits = widgets.IntSlider(value=4, min=1, max=10, continuous_update=False)
        self.digits.observe(lambda _: self.draw(), "value")
        self.table = widgets.HTML(
            "<i>No epoch yet</i>",
            layout=widgets.Layout(max_height="360px", overflow="auto", width="100%"),
        )
        self.export_csv_path = widgets.Text(
            "training_history.csv", layout=widgets.Layout(width="220px")
        )
        self.export_csv_button = reporting_button(message, "Export CSV", "table", self.export_csv)
        self.export_csv_button.add_class("nbseg-export-csv")
        self.export_csv_path.add_class("nbseg-export-csv-path")
        self.widget = widgets.VBox(
            [
                labelled("Significant digits", self.digits),
                self.table,
                widgets.HBox([self.export_csv_path, self.export_csv_button]),
            ]
        )

    def show(
        self, rows: Sequence[dict[str, Any]], loadable: Iterable[tuple[int, int]] = ()
    ) -> None:
        """Show these history rows; ``loadable``: the ``(run, epoch)`` of the states in the
        checkpoint cache (the rows marked ◆)."""
        with self._lock:
            self._rows = list(rows)
            self._loadable = {(int(r), int(e)) for r, e in loadable}
            self.draw()

    def draw(self) -> None:
        with self._lock:
            hist = self._rows
            if not hist:
                self.table.value = "<i>No epoch yet</i>"
                return
            digits = int(self.digits.value)
            cols = [c for c in history_columns(hist) if c not in FOLDED_COLUMNS]
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            body = []
            for r in hist:
                cells = []
                for c in cols:
                    v = r.get(c, "")
                    if c == "checkpoint":
                        key = (row_run(r), int(r.get("epoch", 0)))
                        text = "◆" if key in self._loadable else ""
                    elif c == "epoch" and is_partial(r):
                        text = f"{v} ({r['batches']}/{r['epoch_batches']})"
                    elif isinstance(v, float):
                        text = f"{format_value(v, digits):.{digits}g}"
                    else:
                        text = str(v)
                    cells.append(f"<td>{html.escape(text)}</td>")
                body.append("<tr>" + "".join(cells) + "</tr>")
            self.table.value = (
                "<table class='nbseg-history' style='border-collapse:collapse;font-size:12px'>"
                "<style>.nbseg-history td,.nbseg-history th{border:1px solid #ccc;"
                "padding:2px 6px;text-align:right}</style>"
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            )

    def export_csv(self) -> Path:
        """Write the finished training's history as CSV (``digits`` significant digits)."""
        result = self._need_result("exporting the history")
        path = target(self.export_csv_path.value, "the CSV export", ".csv")
        digits = int(self.digits.value)
        result.to_csv(path, digits)
        self.message.show(
            f"Saved {len(result.history)} epoch(s) to {path} ({digits} significant digits).",
            "info",
        )
        return path
