"""Small synthetic volumes for the core tests (fast, learnable, deterministic)."""

from __future__ import annotations

import numpy as np
import xarray as xr


def blobs(shape=(6, 48, 48), seed=0, labelled=(1, 3), noise=0.15):
    """Bright discs on a dark background; labels on the ``labelled`` slices only."""
    rng = np.random.default_rng(seed)
    _z, y, x = np.indices(shape)
    truth = np.zeros(shape, np.int16)
    for _ in range(max(3, shape[1] * shape[2] // 300)):
        cy, cx, r = rng.uniform(0, shape[1]), rng.uniform(0, shape[2]), rng.uniform(3, 7)
        truth[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = 1
    image = truth * 1.0 + rng.normal(0, noise, shape)
    image = xr.DataArray(
        (image * 100 + 500).astype(np.float32),
        dims=("z", "y", "x"),
        coords={
            "z": np.arange(shape[0]) * 2.0,
            "y": np.arange(shape[1]) * 0.5,
            "x": np.arange(shape[2]) * 0.5,
        },
        attrs={"units": "um"},
        name="image",
    )
    labels = np.full(shape, -1, np.int16)
    for s in labelled:
        if s < shape[0]:
            labels[s] = truth[s]
    labels = xr.DataArray(
        labels,
        dims=image.dims,
        coords=image.coords,
        attrs={"class_names": ["background", "blob"], "class_colors": ["#000000", "#ff0000"]},
    )
    return image, labels, xr.DataArray(truth, dims=image.dims, coords=image.coords)


def dice(pred, truth, cls=1):
    p, t = np.asarray(pred) == cls, np.asarray(truth) == cls
    return 2 * (p & t).sum() / max(1, p.sum() + t.sum())


def ready_model(dim="2D", classes=2, **spec_kw):
    """A tiny untrained U-Net made usable for inference (fixed normalisation and params)."""
    import nbseg

    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=classes,
        input_dimension=dim,
        parameters={"filters": 4, "depth": 2},
        **spec_kw,
    )
    m = nbseg.generate_model(spec)
    m.normalisation = nbseg.Normalisation(low=[400.0], high=[700.0])
    m.params = nbseg.TrainingParams(patch_size=16 if dim == "3D" else 32)
    return m


def count_feedback_predictions(monkeypatch) -> list:
    """Spy on the per-epoch feedback prediction: the returned list grows by one per call."""
    from nbseg.training import callbacks

    calls: list = []
    real = callbacks.feedback_prediction
    monkeypatch.setattr(
        callbacks, "feedback_prediction", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    return calls


def trained_blobs(shape=(8, 48, 48), labelled=(1, 5), seed=3, epochs=4):
    """A tiny 2-class U-Net trained briefly on :func:`blobs`: ``(model, image, labels,
    truth)`` (the uncertainty and suggestion tests share it)."""
    import nbseg

    image, labels, truth = blobs(shape, labelled=labelled, seed=seed)
    spec = nbseg.ModelSpec(class_count=2, parameters={"filters": 8, "depth": 2})
    model = nbseg.generate_model(spec, seed=0)
    params = nbseg.TrainingParams(patch_size=32, batch_size=4, epochs=epochs, precision="32")
    nbseg.train(model, nbseg.TrainingSet(image, labels), params, 0.0, feedback=False)
    return model, image, labels, truth
