"""nbseg: train deep semantic-segmentation models for images and volumes inside JupyterLab."""

from __future__ import annotations

from .errors import InputError, ModelFileError, NbsegError, ParamsError, SpecError, TrainingError
from .models.spec import ModelSpec

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "ModelFileError",
    "ModelSpec",
    "NbsegError",
    "ParamsError",
    "SpecError",
    "TrainingError",
]
