"""`FocusGuard`: a press on an nbseg canvas must not scroll the notebook.

ipycanvas focuses its canvas on every mouse press (``el.focus()``, for its key events) without
``preventScroll``. When the canvas is partly scrolled out of view the browser then scrolls
the notebook to show it, between the press and the first move: the canvas jumps under the
pointer and the stroke or rectangle lands tens of pixels off (issue 16, defect 8). The guard
is a hidden widget in every :class:`~nbseg.ui.imageview.ImageView`; its view patches
``HTMLCanvasElement.focus`` once per page so that canvases inside an nbseg image view are
focused with ``preventScroll: true`` (keys still reach them; other canvases are untouched).
"""

from __future__ import annotations

import anywidget
import ipywidgets as widgets
import traitlets

ESM = """
function render({ el }) {
  el.classList.add('nbseg-focus-guard');
  if (globalThis.__nbsegFocusGuard) return;
  globalThis.__nbsegFocusGuard = true;
  const focus = HTMLCanvasElement.prototype.focus;
  HTMLCanvasElement.prototype.focus = function (options) {
    if (this.closest && this.closest('.nbseg-imageview'))
      return focus.call(this, Object.assign({}, options, { preventScroll: true }));
    return focus.call(this, options);
  };
}
export default { render };
"""


class FocusGuard(anywidget.AnyWidget):
    """Hidden widget whose view keeps nbseg canvases from scrolling the page when pressed."""

    _esm = traitlets.Unicode(ESM).tag(sync=True)

    def __init__(self) -> None:
        super().__init__(layout=widgets.Layout(display="none"))
