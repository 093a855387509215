"""Jupyter widgets of the Deep Learning Tool (thin views over the headless core).

Imported lazily (``nbseg.DeepLearningTool``, ``nbseg.ui.LabelEditor`` …) so that scripts and
the command line never load ipywidgets.
"""

from __future__ import annotations

import importlib
from typing import Any

_PANELS = {
    "DeepLearningTool": "tool",
    "Workspace": "state",
    "ImageView": "imageview",
    "ModelsPanel": "models_panel",
    "ModelGeneratorPanel": "model_generator",
    "InputsPanel": "inputs_panel",
    "TrainingParamsPanel": "params_panel",
    "TrainingPanel": "training_panel",
    "PreviewPanel": "preview_panel",
    "SegmentPanel": "segment_panel",
    "LabelEditor": "labelling",
}

__all__ = sorted(_PANELS)


def __getattr__(name: str) -> Any:
    if name in _PANELS:
        module = importlib.import_module(f".{_PANELS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'nbseg.ui' has no attribute {name!r}")
