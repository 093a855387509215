"""`OpenDataControl`: open an image, label or mask file into the workspace (Inputs and Label
tabs) with :func:`nbseg.open_image` — every format it reads, lazily for the big ones."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import xarray as xr

from ..errors import InputError
from ..formats import open_image
from . import style
from .state import Workspace

KINDS = (("Image", "images"), ("Labels (multi-ROI)", "labels"), ("Mask", "masks"))


def describe(da: xr.DataArray) -> str:
    """``name: shape dtype, voxel size, lazy or in memory`` (one line, plain text)."""
    size = da.attrs.get("voxel_size")
    units = da.attrs.get("units")
    if size is not None:
        vals = size if isinstance(size, (list, tuple)) else [size]
        unit = units[0] if isinstance(units, (list, tuple)) and units else units
        voxel = " × ".join(f"{float(v):g}" for v in vals) + (f" {unit}" if unit else "")
    else:
        voxel = "not stated (1 per voxel)"
    lazy = "lazy (read on demand)" if da.chunks is not None else "in memory"
    shape = " × ".join(f"{d} {n}" for d, n in zip(da.dims, da.shape))
    return f"{da.name}: {shape}, {da.dtype}, voxel size {voxel}, {lazy}"


def default_name(path: str) -> str:
    """A workspace name from a file name: ``scan/stack.ome.zarr`` → ``stack``."""
    p = Path(path.rstrip("/\\"))
    while p.name and any(c in p.name for c in "*?["):  # a glob: name it after its folder
        p = p.parent
    base = p.name or "data"
    base = re.sub(
        r"(\.ome)?\.(zarr|tiff?|nii(\.gz)?|h5|hdf5|mrc|nc|npy|png)$", "", base, flags=re.I
    )
    return re.sub(r"[^\w.-]+", "_", base) or "data"


class OpenDataControl(widgets.VBox):
    """Path (a file, a zarr / OME-Zarr store, a folder of slices or a glob), the
        format-specific options (dataset, level, channel), a name and what it is (image, labels or
        mask); **Open** adds it to the workspace and shows its shape, dtype, voxel size and
        whether it is lazy. :meth:`open_file` does the same from code (``open`` is the
    widget's own method)."""

    def __init__(self, workspace: Workspace, message: style.MessageBox | None = None) -> None:
        self.workspace = workspace
        self.message = message if message is not None else style.MessageBox()
        self.path = widgets.Text(
            placeholder="stack.tif, scan.ome.zarr, slices/ or slices/*.png, data.h5, vol.nii.gz",
            layout=widgets.Layout(flex="1 1 300px", max_width="520px"),  # beside its label
        )
        self.dataset = widgets.Text(
            placeholder="HDF5 / zarr dataset (optional)", layout=widgets.Layout(width="220px")
        )
        self.level = widgets.BoundedIntText(
            value=0, min=0, max=20, layout=widgets.Layout(width="70px")
        )
        self.channel = widgets.Text(
            placeholder="all channels", layout=widgets.Layout(width="120px")
        )
        self.name = widgets.Text(placeholder="from the file name")
        self.kind = widgets.Dropdown(options=KINDS, value="images")
        self.open_button = widgets.Button(
            description="Open", icon="folder-open", button_style="primary"
        )
        self.info = widgets.HTML("")
        super().__init__(
            [
                style.labelled("Path", self.path, "A file, a store, a folder of slices or a glob"),
                style.labelled("Dataset", self.dataset, "HDF5 / zarr array, OME-Zarr sub-image"),
                widgets.HBox(
                    [
                        style.labelled("Level", self.level, "OME-Zarr / pyramid level (0 = full)"),
                        style.labelled("Channel", self.channel, "One channel (index or name)"),
                    ],
                    layout=widgets.Layout(flex_flow="row wrap"),
                ),
                style.labelled("Name", self.name, "Name in the workspace"),
                style.labelled("Open as", self.kind),
                self.open_button,
                self.info,
            ]
        )
        self.open_button.on_click(lambda _: style.run_reporting(self.message, self.open_file))
        self.layout.display = "none"
        self.toggle = widgets.ToggleButton(
            value=False,
            description="Open data from a file",
            icon="folder-open",
            tooltip="TIFF / OME-TIFF stacks, slice folders, OME-Zarr, zarr, HDF5, NIfTI, MRC, "
            "netCDF, .npy — big files are opened lazily",
            layout=widgets.Layout(width="auto"),
        )
        """Shows and hides the control (hidden at first): put it above the control."""
        self.toggle.observe(
            lambda ch: setattr(self.layout, "display", None if ch["new"] else "none"),
            names="value",
        )

    def open_file(
        self, path: str | os.PathLike[str] | None = None, *, kind: str | None = None
    ) -> list[xr.DataArray]:
        """Open ``path`` (default: the Path field) into the workspace as ``kind``
        (``"images"``, ``"labels"``, ``"masks"``); returns what was added (one DataArray per
        channel)."""
        text = str(path if path is not None else self.path.value).strip()
        if not text:
            raise InputError("Type the path of an image file, store, slice folder or glob first.")
        kind = kind or self.kind.value
        if kind not in dict((v, k) for k, v in KINDS):
            raise InputError(f"kind={kind!r}: choose one of 'images', 'labels', 'masks'.")
        channel: int | str | None = self.channel.value.strip() or None
        if isinstance(channel, str) and channel.isdigit():
            channel = int(channel)
        opened = open_image(
            os.path.expanduser(text),
            dataset=self.dataset.value.strip() or None,
            level=int(self.level.value),
            channel=channel,
        )
        arrays = opened if isinstance(opened, list) else [opened]
        base = self.name.value.strip() or default_name(text)
        names = [base] if len(arrays) == 1 else [f"{base}_c{i}" for i in range(len(arrays))]
        taken = [n for n in names if n in getattr(self.workspace, kind)]
        if taken:
            raise InputError(
                f"The workspace already has {'labels' if kind == 'labels' else kind[:-1]} "
                f"{', '.join(map(repr, taken))}: type another name in 'Name'."
            )
        added = []
        for n, da in zip(names, arrays):
            da = da.rename(n)
            if kind == "images":
                added.append(self.workspace.add_image(n, da))
            elif kind == "labels":
                if not np.issubdtype(da.dtype, np.integer):
                    raise InputError(
                        f"{text!r} holds {da.dtype} values, not class ids: open it as an image, "
                        "or give a label file (integers, -1 unlabelled)."
                    )
                added.append(self.workspace.add_labels(n, da.compute()))
            else:
                added.append(self.workspace.add_mask(n, da.compute()))
        self.info.value = "<br>".join(
            f"<span style='font-size:12px'>{html.escape(describe(a))}</span>" for a in added
        )
        what = {"images": "image", "labels": "labels", "masks": "mask"}[kind]
        self.message.show(f"Opened {text!r} as {what} {', '.join(repr(n) for n in names)}.", "info")
        return added


__all__ = ["KINDS", "OpenDataControl", "default_name", "describe"]
