"""nbseg: train deep semantic-segmentation models for images and volumes inside JupyterLab.

The headless API (scripts, tests and the widgets all use it)::

    import nbseg
    spec = nbseg.ModelSpec(architecture="unet", class_count=3, input_dimension="2D")
    model = nbseg.generate_model(spec)
    tset = nbseg.TrainingSet(inputs=image, output=labels)
    result = nbseg.train(model, [tset], nbseg.TrainingParams(epochs=20))
    labels = nbseg.segment(model, image)

    image = nbseg.open_image("scan.tif")              # lazily, coords in physical units
    nbseg.segment(model, image, out="labels.ome.zarr")  # streamed into OME-Zarr labels
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _system, datasets, progress
from ._version import __version__ as __version__
from .config import TrainingConfig, load_config
from .data.augment import AugmentationParams
from .data.multiroi import (
    UNLABELLED,
    extract_labelled_slices,
    from_binary_rois,
    labelled_slices,
    multi_roi,
)
from .data.trainingset import Normalisation, TrainingSet
from .errors import InputError, ModelFileError, NbsegError, ParamsError, SpecError, TrainingError
from .evaluation import evaluate, overlay, show
from .formats import open_image, save_labels
from .inference.job import SegmentationRun, SuggestionRun
from .inference.settings import InferenceSettings
from .inference.sliding import preview, segment
from .inference.uncertainty import (
    Region,
    Suggestions,
    suggest,
    suggest_regions,
    suggest_slices,
    uncertainty,
)
from .model import Model, generate_model, load_model
from .models.registry import architectures, get_architecture
from .models.spec import ModelSpec
from .store.library import ModelLibrary
from .training.callbacks import CheckpointCache, FeedbackRegion, TrainingListener
from .training.fingerprint import DataFingerprint, TrainingBudgetPlan, plan_training
from .training.job import TrainingRun
from .training.params import TrainingParams
from .training.run import TrainingInterrupted, TrainingResult, train

if TYPE_CHECKING:  # loaded lazily by __getattr__
    from .ui.tool import DeepLearningTool

# Binder and containers give 1-2 CPUs of a big host: never start more torch threads than that.
_system.limit_torch_threads()


def __getattr__(name: str) -> type[DeepLearningTool]:
    # lazy: the widgets import ipywidgets & co only when used
    if name == "DeepLearningTool":
        from .ui.tool import DeepLearningTool

        return DeepLearningTool
    raise AttributeError(f"module 'nbseg' has no attribute {name!r}")


__all__ = [
    "UNLABELLED",
    "AugmentationParams",
    "CheckpointCache",
    "DataFingerprint",
    "DeepLearningTool",
    "FeedbackRegion",
    "InferenceSettings",
    "InputError",
    "Model",
    "ModelFileError",
    "ModelLibrary",
    "ModelSpec",
    "NbsegError",
    "Normalisation",
    "ParamsError",
    "Region",
    "SegmentationRun",
    "SpecError",
    "SuggestionRun",
    "Suggestions",
    "TrainingBudgetPlan",
    "TrainingConfig",
    "TrainingError",
    "TrainingInterrupted",
    "TrainingListener",
    "TrainingParams",
    "TrainingResult",
    "TrainingRun",
    "TrainingSet",
    "architectures",
    "datasets",
    "evaluate",
    "extract_labelled_slices",
    "from_binary_rois",
    "generate_model",
    "get_architecture",
    "labelled_slices",
    "load_config",
    "load_model",
    "multi_roi",
    "open_image",
    "overlay",
    "plan_training",
    "preview",
    "progress",
    "save_labels",
    "segment",
    "show",
    "suggest",
    "suggest_regions",
    "suggest_slices",
    "train",
    "uncertainty",
]
