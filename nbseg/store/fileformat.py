"""The ``.nbseg`` model file: one safetensors file (weights) whose header holds the JSON
metadata (spec, classes, normalisation, training params, history).

Loading never executes code from the file (safetensors holds raw tensors and strings only);
saving is atomic: the file is written beside the target, flushed to disk, then renamed over it,
so a crash leaves either the old model or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_write_bytes
from ..errors import ModelFileError

__all__ = ["atomic_write_bytes", "read_model_file", "write_model_file"]

FORMAT = "nbseg-model"
FORMAT_VERSION = 1


def write_model_file(
    path: str | os.PathLike[str], state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "meta": json.dumps(meta)}
    return atomic_write_bytes(path, save(tensors, metadata=header))


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"No model file at {str(path)!r}.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            if header.get("format") != FORMAT:
                raise ModelFileError(
                    f"{str(path)!r} is a safetensors file but not an nbseg model (no "
                    f"'{FORMAT}' header); import foreign weights with nbseg.import_model."
                )
            if int(header.get("version", 0)) > FORMAT_VERSION:
                raise ModelFileError(
                    f"{str(path)!r} was written by a newer nbseg (format version "
                    f"{header['version']} > {FORMAT_VERSION}); upgrade nbseg."
                )
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except ModelFileError:
        raise
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{str(path)!r} is not a readable nbseg model file ({err}); it may be truncated "
            "or not a model."
        ) from None
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{str(path)!r}: damaged model metadata ({err}).") from None
    return state, meta


def read_model_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the metadata (fast: the weights are not read), for model lists."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except Exception as err:
        raise ModelFileError(f"{str(path)!r} is not a readable nbseg model file ({err}).") from None
    if header.get("format") != FORMAT:
        raise ModelFileError(f"{str(path)!r} is not an nbseg model file.")
    return json.loads(header["meta"])
