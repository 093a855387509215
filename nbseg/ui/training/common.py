"""Small helpers shared by the Training panel's views."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ...errors import InputError
from ...training.run import TrainingResult
from ..style import MessageBox, run_reporting

NeedResult = Callable[[str], TrainingResult]
"""``need_result(what)``: the finished result, or an InputError saying why ``what`` waits."""


def reporting_button(
    message: MessageBox, description: str, icon: str, action: Callable[[], Any], tooltip: str = ""
) -> widgets.Button:
    """A button whose action reports any error in ``message`` (never a traceback)."""
    b = widgets.Button(description=description, icon=icon, tooltip=tooltip or description)
    b.on_click(lambda _: run_reporting(message, action))
    return b


@contextlib.contextmanager
def hold(*ws: widgets.Widget) -> Iterator[None]:
    """Hold the syncs of several widgets (one message each on exit)."""
    with contextlib.ExitStack() as stack:
        for w in ws:
            stack.enter_context(w.hold_sync())
        yield


def set_bounds(slider: widgets.Widget, lo: int, hi: int) -> None:
    """Set ``min``/``max`` in an order the slider accepts (min never above max)."""
    hi = max(lo, hi)
    if lo > slider.max:
        slider.max = hi
        slider.min = lo
    else:
        slider.min = lo
        slider.max = hi


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def as_float(v: Any) -> float:
    return float(v) if is_number(v) else float("nan")


def clock(seconds: Any) -> str:
    """``75`` → ``"1:15"``, ``3700`` → ``"1:01:40"``; ``"–"`` when unknown."""
    if seconds is None or not is_number(seconds) or not math.isfinite(seconds):
        return "–"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name.strip())
    return keep.strip("._") or "model"


def with_epoch(path: str, epoch: int, suffix: str) -> str:
    """``feedback.png`` → ``feedback_epoch3.png`` (replacing an earlier ``_epochN``)."""
    p = Path(path.strip() or f"file{suffix}")
    stem = re.sub(r"_epoch\d+$", "", p.stem)
    return str(p.with_name(f"{stem}_epoch{epoch}{p.suffix or suffix}"))


def target(text: str, what: str, suffix: str) -> Path:
    """The file path typed for ``what`` (``suffix`` added when missing), or an InputError."""
    raw = (text or "").strip()
    if not raw:
        raise InputError(f"Type a file path for {what} (e.g. 'out{suffix}').")
    path = Path(raw).expanduser()
    if path.suffix == "":
        path = path.with_suffix(suffix)
    if path.is_dir():
        raise InputError(f"{path} is a folder; type a file name for {what}.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(
            f"The folder {parent} does not exist; create it or type another path for {what}."
        )
    return path
