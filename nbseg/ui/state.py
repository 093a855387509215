"""`Workspace`: the data and model a Deep Learning Tool works on (plain Python, no widgets).

Panels read it and send user intent back; they observe changes with :meth:`Workspace.observe`
(events: ``"images"``, ``"labels"``, ``"masks"``, ``"model"``, ``"params"``, ``"result"``,
``"training_sets"``, ``"unlabelled"``, ``"feedback"``).

Contract between panels: the Inputs panel writes ``training_sets``, ``validation``,
``unlabelled`` and ``feedback`` (via :meth:`set_training_sets` / :meth:`set_unlabelled` /
:meth:`set_feedback`); the New-model and Models
panels write ``model``; the Training-parameters panel writes ``params``; the Training panel
reads all of them and writes ``result`` (and the trained ``model``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..data.multiroi import multi_roi
from ..data.trainingset import TrainingSet, as_dataarray
from ..errors import InputError
from ..model import Model
from ..store.library import ModelLibrary
from ..training.callbacks import FeedbackRegion
from ..training.params import TrainingParams
from ..training.run import TrainingResult

Listener = Callable[[str, Any], None]


class Workspace:
    """Named images, multi-ROIs and masks, the current model, params and last result."""

    def __init__(
        self,
        images: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
        masks: Mapping[str, Any] | None = None,
        model: Model | None = None,
        params: TrainingParams | None = None,
        library: ModelLibrary | None = None,
    ) -> None:
        self.images: dict[str, xr.DataArray] = {}
        self.labels: dict[str, xr.DataArray] = {}
        self.masks: dict[str, xr.DataArray] = {}
        self.model = model
        self.params = params or (model.params if model and model.params else TrainingParams())
        self.library = library
        self.result: TrainingResult | None = None
        self.training_sets: list[TrainingSet] = []
        self.validation: float | list[TrainingSet] = 0.2
        #: images without labels to learn from too (``nbseg.train(..., unlabelled=)``): one
        #: list of input DataArrays per image
        self.unlabelled: list[list[xr.DataArray]] = []
        self.feedback: FeedbackRegion | None = None
        self._listeners: list[Listener] = []
        for name, da in (images or {}).items():
            self.add_image(name, da)
        for name, da in (labels or {}).items():
            self.add_labels(name, da)
        for name, da in (masks or {}).items():
            self.add_mask(name, da)

    # -- observers ---------------------------------------------------------------------
    def observe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: str, value: Any = None) -> None:
        for listener in list(self._listeners):
            listener(event, value)

    # -- data ----------------------------------------------------------------------------
    def add_image(self, name: str, image: Any) -> xr.DataArray:
        da = as_dataarray(image, name)
        self.images[name] = da
        self.emit("images", name)
        return da

    def add_labels(self, name: str, labels: Any) -> xr.DataArray:
        roi = multi_roi(as_dataarray(labels, name))
        roi.name = name
        self.labels[name] = roi
        self.emit("labels", name)
        return roi

    def add_mask(self, name: str, mask: Any) -> xr.DataArray:
        da = as_dataarray(mask, name)
        if da.dtype != bool:
            da = da != 0
        self.masks[name] = da
        self.emit("masks", name)
        return da

    def remove(self, kind: str, name: str) -> None:
        store = {"images": self.images, "labels": self.labels, "masks": self.masks}[kind]
        store.pop(name, None)
        self.emit(kind, name)

    def compatible(self, kind: str, image_name: str) -> list[str]:
        """Names of ``kind`` ("images", "labels", "masks") with the geometry of an image."""
        if image_name not in self.images:
            return []
        shape = self.images[image_name].shape
        store = {"images": self.images, "labels": self.labels, "masks": self.masks}[kind]
        names = [n for n, da in store.items() if da.shape == shape]
        if kind == "labels" and self.model is not None:
            k = self.model.spec.class_count
            names = [n for n in names if max_class(store[n]) < k]
        return names

    # -- model ---------------------------------------------------------------------------
    def set_model(self, model: Model | None) -> None:
        self.model = model
        if model is not None and model.params is not None:
            self.params = model.params
        self.emit("model", model)

    def set_params(self, params: TrainingParams) -> None:
        self.params = params
        self.emit("params", params)

    def set_training_sets(
        self, sets: list[TrainingSet], validation: float | list[TrainingSet] | None = None
    ) -> None:
        self.training_sets = list(sets)
        if validation is not None:
            self.validation = validation
        self.emit("training_sets", self.training_sets)

    def set_unlabelled(self, images: list[list[xr.DataArray]]) -> None:
        """The unlabelled images training learns from as well (one list of inputs each)."""
        self.unlabelled = [list(inputs) for inputs in images]
        self.emit("unlabelled", self.unlabelled)

    def set_feedback(self, region: FeedbackRegion | None) -> None:
        self.feedback = region
        self.emit("feedback", region)

    def set_result(self, result: TrainingResult | None) -> None:
        self.result = result
        self.emit("result", result)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], **kw: Any) -> Workspace:
        """Pick the DataArrays of a namespace (e.g. ``globals()``) besides those given in
        ``kw`` (``images=``, ``labels=``, ``masks=``, ``model=`` …): integer arrays with
        ``class_names`` become multi-ROIs, boolean ones masks, the rest images."""
        ws = cls(**kw)
        for name, value in namespace.items():
            if name.startswith("_") or not isinstance(value, xr.DataArray):
                continue
            if name in ws.images or name in ws.labels or name in ws.masks:
                continue  # arrays passed by name explicitly win
            if value.ndim not in (2, 3):
                continue
            try:
                if value.dtype == bool:
                    ws.add_mask(name, value)
                elif "class_names" in value.attrs:
                    ws.add_labels(name, value)
                else:
                    ws.add_image(name, value)
            except InputError:
                continue
        return ws


def max_class(roi: xr.DataArray) -> int:
    v = np.asarray(roi.values)
    return int(v.max()) if v.size else -1
