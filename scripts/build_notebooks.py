"""Write notebooks/*.ipynb from the cell sources below (no outputs).

The notebooks have one source, this file: edit a cell here, then run
``python scripts/build_notebooks.py [NAME ...] [--out DIR]`` (default: every notebook, into
notebooks/). tests/test_hygiene.py fails when the committed notebooks differ from what this
writes; tests/test_notebooks.py executes them. Code cells are linted and format-checked by ruff
(scripts/test.sh), so write them as ``ruff format`` would. Every notebook reads
``NBSEG_SMALL=1`` (set by the test command) to shrink sizes and epochs: the code path is the
same in both sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1] / "notebooks"

SMALL = 'SMALL = os.environ.get("NBSEG_SMALL") == "1"  # CI switch: smaller data, fewer epochs; same code'


def setup(imports: str = "import os\n\nimport nbseg") -> str:
    """The first code cell: the notebook's imports (one sorted block), then the CI switch."""
    return imports.strip("\n") + "\n\n" + SMALL


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text.strip("\n"))


NOTEBOOKS: dict[str, list[nbformat.NotebookNode]] = {}

# ------------------------------------------------------------------------------------------
NOTEBOOKS["01_quickstart.ipynb"] = [
    md("""
# nbseg quickstart: from a volume with three painted slices to a segmented volume

**What you learn:** the whole Deep Learning Tool workflow in one notebook — sample data with a
few labelled slices, a model from the generator, training with a live graph and a live
prediction (the *visual feedback* region), then segmenting the whole volume and saving the model.

Runs top to bottom on 2 CPU cores in about two minutes. Everything you do here by code you can
also do by clicking in the tool's tabs (and the other way round).
"""),
    code(setup()),
    md("""
## 1. Data: a fibre-composite micro-CT volume, labelled on three slices

`nbseg.datasets` generates small synthetic volumes modelled on real case studies (no download).
`image` is an `xarray.DataArray` with dims `(z, y, x)`; `labels` is the *multi-ROI* a user would
paint: class ids on three slices, `-1` (unlabelled) everywhere else; `truth` is only for scoring.
"""),
    code("""
ds = nbseg.datasets.fibres(shape=(16, 96, 96) if SMALL else (32, 128, 128), labelled_slices=3)
z = ds.attrs["labelled_slices"][1]
print(
    ds.image.dims, ds.image.shape, ds.image.dtype, "labelled slices:", ds.attrs["labelled_slices"]
)
nbseg.show(ds.image, [None, ds.labels], z)  # the slice, and the labels painted on it
"""),
    md("""
## 2. A model and its training parameters

The *model generator* turns a `ModelSpec` (architecture, classes, inputs, 2D / 2.5D / 3D) into an
untrained model. `TrainingParams` holds patch size, batch size, epochs, loss, optimiser,
augmentation and the advanced settings; its **estimated memory ratio** says before training
whether a step fits (> 1.00 will not).
"""),
    code("""
spec = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="2D", name="fibres")
model = nbseg.generate_model(spec)
params = nbseg.TrainingParams(patch_size=64, batch_size=8, epochs=4 if SMALL else 40)
print(f"{model.parameter_count():,} parameters;", params.memory_estimate(spec))
"""),
    md("""
## 3. The Deep Learning Tool

The tabs are Dragonfly's dialogs: **Models**, **New model**, **Inputs** (training sets, validation,
the visual-feedback rectangle), **Training parameters**, **Train**, **Preview**,
**Segment with AI** and **Label**. Click **Train** in the *Train* tab — or run the next cell,
which does the same. Training runs in the background: the graph gains a point per epoch, the
feedback image shows the prediction after each epoch, and **Stop** ends it within a batch.
"""),
    code("""
tool = nbseg.DeepLearningTool(
    images={"fibres": ds.image}, labels={"fibres_labels": ds.labels}, model=model, params=params
)
tool
"""),
    code("""
run = tool.train()  # same as clicking Train: returns at once, the kernel stays free
"""),
    code("""
result = tool.wait()  # block until training ends (skip this cell to keep working meanwhile)
last = result.history[-1]
print(
    f"{result.status} after {len(result.history)} epochs in {last['time']:.0f} s: "
    f"val_dice {last['val_dice']:.3f}"
)
"""),
    md("""
## 4. Segment the whole volume

`nbseg.segment` slides the model over every slice (Gaussian-blended overlapping tiles) and returns
a label volume with the image's dims and coordinates. Here we can score it against the truth.
"""),
    code("""
seg = nbseg.segment(tool.model, ds.image)
scores = nbseg.evaluate(seg, ds.truth)
print({k: round(v, 3) for k, v in scores.items() if k.startswith("dice")})
nbseg.show(ds.image, [ds.truth, seg], 2)  # truth | prediction on an unlabelled slice
"""),
    md("""
## 5. Save the model

One file (safetensors: weights + spec, classes, normalisation, training parameters and
history); loading never executes code. Continue training it later, or use it in *Segment with AI*.
"""),
    code("""
path = tool.model.save("fibres_quickstart.nbseg")
again = nbseg.load_model(path)
print(again.name, again.epochs_trained, "epochs trained, classes", again.class_names)
"""),
    md("""
**Next:** `02_label_and_train.ipynb` (paint labels yourself), `03_multiphase.ipynb` (several
classes, masks, 2.5D), `04_teaching.ipynb` (what each knob does), `05_big_volumes.ipynb`
(volumes larger than memory, the command line, GPU clusters).
"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["02_label_and_train.ipynb"] = [
    md("""
# Label, train, correct, retrain: a fibre volume from scratch

**What you learn:** the interactive loop of deep segmentation on a new, unlabelled volume —
paint a few strokes per class in the **Label** tab, train, look at where the model is wrong,
paint corrections there, and continue training the same model (fine-tuning). This is how a
fibre-composite CT scan gets segmented in practice: nobody labels whole slices.

In a live session you paint with the mouse (brush, eraser, fill, undo; classes with names and
colours). So that this notebook also runs unattended, the cells below paint *the same kind of
strokes* by code (`editor.paint`), taken from the sample's hidden ground truth.
"""),
    code(
        setup("""
import os

import numpy as np
from scipy import ndimage

import nbseg
""")
    ),
    code("""
ds = nbseg.datasets.fibres(shape=(12, 96, 96) if SMALL else (32, 128, 128), seed=3)
image, truth = ds.image, ds.truth  # truth is hidden from training: we only use it to "paint"
spec = nbseg.ModelSpec(architecture="unet", class_count=2, name="fibres-from-scratch")
model = nbseg.generate_model(spec, class_names=["matrix", "fibre"])
params = nbseg.TrainingParams(patch_size=64, epochs=3 if SMALL else 30, seed=0)
tool = nbseg.DeepLearningTool(images={"fibres": image}, model=model, params=params, tab="Label")
editor = tool.labelling  # the Label tab: an empty multi-ROI over the volume
tool
"""),
    md("""
## 1. Paint a few strokes on two slices

A stroke is a list of `(y, x)` points drawn with a round brush; `scribble` below mimics a user
dragging the brush inside a fibre or inside the matrix (never across a boundary).
"""),
    code("""
rng = np.random.default_rng(0)


def scribble(z, cls, strokes=6, length=12, radius=1.5):
    inside = ndimage.binary_erosion(truth.values[z] == cls, iterations=3)
    ys, xs = np.nonzero(inside)
    for _ in range(strokes):
        i = rng.integers(len(ys))
        y, x = int(ys[i]), int(xs[i])
        points = [(y, x)]
        for _ in range(length):  # a short random walk that stays inside the class
            dy, dx = rng.integers(-2, 3, size=2)
            if (
                0 <= y + dy < inside.shape[0]
                and 0 <= x + dx < inside.shape[1]
                and inside[y + dy, x + dx]
            ):
                y, x = y + dy, x + dx
                points.append((y, x))
        editor.paint(z, points, cls, radius)


first = [2, image.sizes["z"] - 3]
for z in first:
    for cls in (0, 1):
        scribble(z, cls)
labelled = int((editor.labels.values >= 0).sum())
print(f"painted {labelled} voxels = {labelled / editor.labels.size:.2%} of the volume")
nbseg.show(image, editor.labels, first[0])
"""),
    md("""
## 2. Train on the strokes

The **Inputs** tab picked up the painted multi-ROI (unlabelled voxels count for nothing in the
loss). Train — by clicking **Train**, or with the same call below.
"""),
    code("""
tool.train()
result = tool.wait()


def score():
    seg = nbseg.segment(tool.model, image)
    return seg, nbseg.evaluate(seg, truth)


seg, before = score()
print(f"{result.status}: fibre Dice {before['dice_fibre']:.3f}, mean Dice {before['dice']:.3f}")
"""),
    md("""
## 3. Find the errors, paint corrections, continue training

Look at the prediction on a slice nobody labelled: where it is wrong, paint the right class
(here: strokes inside the largest wrong regions), then train again. The model **continues**
from its current weights (fine-tuning), and its history keeps growing.
"""),
    code("""
z = image.sizes["z"] // 2
wrong = seg.values[z] != truth.values[z]
regions, n = ndimage.label(ndimage.binary_opening(wrong))
sizes = ndimage.sum(wrong, regions, range(1, n + 1))
for r in np.argsort(sizes)[::-1][:8] + 1:  # the eight largest error regions
    ys, xs = np.nonzero(regions == r)
    k = len(ys) // 2
    editor.paint(z, [(int(ys[k]), int(xs[k]))], int(truth.values[z, ys[k], xs[k]]), 2)
scribble(z, 0, strokes=3)
scribble(z, 1, strokes=3)
labelled = int((editor.labels.values >= 0).sum())
print(f"slice {z}: {n} error regions, corrected the largest; now {labelled} labelled voxels")
nbseg.show(image, [truth, seg, editor.labels], z, width=260)
"""),
    code("""
tool.train()
result = tool.wait()
seg, after = score()
print(
    f"fibre Dice {before['dice_fibre']:.3f} -> {after['dice_fibre']:.3f} after correcting one slice "
    f"({tool.model.epochs_trained} epochs in total)"
)
"""),
    md("""
## 4. Let the model say where to label next

Choosing the slice to correct by eye is slow on a big volume. `nbseg.suggest` (the Label tab's
**Suggest where to label**) runs the model once and scores every unlabelled slice by the
*uncertainty* of its voxels — the normalised entropy of the predicted class probabilities,
0 = sure, 1 = all classes equally likely — weighted by how rare each voxel's predicted class is
(an unsure fibre counts more than unsure matrix). A slice scores a high quantile (90 %) of these
values, so a slice with a sizeable unsure area beats one with a single unsure voxel. A network
is often *confidently* wrong on what it never saw (a phase absent from the labelled slices), so
the score also adds 10 × the slice's share of voxels whose intensity no label covers
(`sugg.slice_novelty`; the Label tab lists it as "new intensities"). Labelled slices are skipped
and no two suggestions are neighbours. The errors should sit where the map is high — check it:
"""),
    code("""
sugg = nbseg.suggest(tool.model, image, editor.labels, count=2)
print("label next: slices", sugg.slices, "scores", [round(s, 2) for s in sugg.slice_scores])
u = sugg.uncertainty.values
errors = sugg.prediction.values != truth.values
unsure = u > np.median(u)
print(f"errors where unsure: {errors[unsure].mean():.1%}, where sure: {errors[~unsure].mean():.1%}")
editor.suggest_labels(wait=True)  # the same in the Label tab: a list of slices and regions
editor.jump_to(sugg.slices[0])  # what clicking one does: go there, unsure areas outlined
"""),
    md("""
In the Label tab the suggested slice now shows the model's prediction faintly under your
painting and the unsure areas outlined (tick **Show uncertainty** for the map itself). Paint
that slice, then **Retrain**: the model is fine-tuned in the background on the updated labels
(the Train tab's graph continues) and the suggestions refresh when it ends.
"""),
    code("""
z = sugg.slices[0]
for cls in (0, 1):
    scribble(z, cls)
tool.retrain()
tool.wait()
editor.suggestion_job.wait()  # the refreshed suggestions
seg, guided = score()
print(
    f"fibre Dice {after['dice_fibre']:.3f} -> {guided['dice_fibre']:.3f} after painting suggested "
    f"slice {z}; next suggestions: {editor.suggestions.slices}"
)
"""),
    md("""
**Try:** undo a stroke (`editor.undo()` or the ↶ button), add a third class for *voids*
(`editor.new_class("void", "#ff00ff")` — the model then needs 3 classes), or fill a whole region
with the fill tool. The labels are always available as `editor.labels` (an `xarray.DataArray`).
"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["03_multiphase.ipynb"] = [
    md("""
# Case study: a multi-phase material (4 classes, a mask, class weights, 2D vs 2.5D)

**What you learn:** segmenting a sandstone-like micro-CT volume into pores, clay matrix, grains
and dense minerals; restricting training and segmentation to the sample with a **mask**;
balancing rare phases with **class weights**; and whether **2.5D** context (neighbouring slices
as channels) beats plain 2D on the same budget.
"""),
    code(
        setup("""
import os

import numpy as np
import xarray as xr

import nbseg
""")
    ),
    code("""
ds = nbseg.datasets.multiphase(shape=(16, 96, 96) if SMALL else (32, 128, 128), labelled_slices=4)
print(ds.labels.attrs["class_names"], "labelled slices:", ds.attrs["labelled_slices"])
counts = np.bincount(ds.truth.values.ravel(), minlength=4)
print(
    "phase fractions:",
    dict(zip(ds.labels.attrs["class_names"], np.round(counts / counts.sum(), 3))),
)
nbseg.show(ds.image, [None, ds.truth], ds.attrs["labelled_slices"][1])
"""),
    md("""
## A mask: the cylindrical sample

Real CT volumes have air around the sample. A boolean **mask** restricts where training patches
come from and where the loss counts; `segment(..., mask=)` skips tiles outside it and writes `-1`.
"""),
    code("""
zz, yy, xx = xr.broadcast(*(ds.image[d] for d in ("z", "y", "x")))
cy, cx, r = (
    float(ds.image.y.mean()),
    float(ds.image.x.mean()),
    0.48 * float(ds.image.x.max() - ds.image.x.min()),
)
mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).rename("sample")
print(f"mask keeps {float(mask.mean()):.0%} of the voxels")
"""),
    md("""
## 2D vs 2.5D, with class weights from label frequencies

Same budget, same data; the only change is the input dimension. `class_weights="frequency"`
weighs the loss by inverse class frequency so the rare dense phase counts.
"""),
    code("""
epochs = 3 if SMALL else 30
results = {}
for dim in ("2D", "2.5D"):
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=4,
        input_dimension=dim,
        slices=3 if dim == "2.5D" else 1,
        name=f"multiphase-{dim}",
    )
    model = nbseg.generate_model(spec)
    params = nbseg.TrainingParams(patch_size=64, epochs=epochs, class_weights="frequency", seed=0)
    res = nbseg.train(
        model, [nbseg.TrainingSet(ds.image, ds.labels, mask=mask)], params, validation=0.2
    )
    seg = nbseg.segment(model, ds.image, mask=mask)
    results[dim] = (model, seg, nbseg.evaluate(seg, ds.truth, mask=mask), res.history[-1]["time"])
for dim, (_, _, m, t) in results.items():
    per_class = {k[5:]: round(v, 3) for k, v in m.items() if k.startswith("dice_")}
    print(f"{dim:5s} mean Dice {m['dice']:.3f}  {per_class}  ({t:.0f} s)")
"""),
    code("""
z = 1
nbseg.show(ds.image, [ds.truth.where(mask, -1), results["2D"][1], results["2.5D"][1]], z, width=300)
"""),
    md("""
**Reading the result:** the scores above come from the slices nobody labelled. 2.5D usually helps
where a phase is thin in-plane but continuous across slices; when it does not, the extra input
channels only cost time. Try `slices=5`, or `architecture="attention_unet"`, in the loop above.
"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["04_teaching.ipynb"] = [
    md("""
# Teaching deep segmentation with nbseg

**What you learn:** what each knob of a segmentation training does, from five small
experiments, each a few seconds to a minute on a laptop CPU, with a question to answer and an
exercise. The data is synthetic ISBI-2012-like EM (cells separated by dark membranes).

1. **Patches** — what the network actually sees.
2. **Losses** — cross-entropy vs Dice when one class is rare.
3. **Over-fitting and validation** — why we hold out patches.
4. **Augmentation** — more data for free, and what it must not break.
5. **2D vs 2.5D vs 3D** — how much context is worth.
"""),
    code(
        setup("""
import os

import bqplot.pyplot as plt
import ipywidgets as widgets
import numpy as np
import torch

import nbseg
from nbseg.data.augment import augment_batch
from nbseg.data.patches import PreparedSet, extract, patch_shape, plan_patches
""")
    ),
    code("""
ds = nbseg.datasets.membranes(
    shape=(6, 96, 96) if SMALL else (8, 128, 128), labelled_slices=[1, 3, 5]
)
EPOCHS = 3 if SMALL else 25


def curves(histories, key, title):
    fig = plt.figure(title=title, layout=widgets.Layout(width="480px", height="300px"))
    for name, hist in histories.items():
        plt.plot(
            [r["epoch"] for r in hist], [r[key] for r in hist], labels=[name], display_legend=True
        )
    plt.xlabel("epoch")
    plt.ylabel(key)
    return fig


nbseg.show(ds.image, [None, ds.truth], 1)
"""),
    md("""
## 1. Patches

Training never sees whole slices: it sees **patches** (here 48 × 48) cut from the labelled region
on a grid whose step is `stride_ratio × patch size`. A fraction of grid patches is held out for
validation, and training patches overlapping them are dropped, so validation is honest.
"""),
    code("""
spec = nbseg.ModelSpec(architecture="unet", class_count=2, input_dimension="2D")
tset = nbseg.TrainingSet(ds.image, ds.labels)
norm = nbseg.Normalisation.fit([tset])
ps = PreparedSet.from_training_set(tset, norm)
pshape = patch_shape(spec, 48)
plan = plan_patches([ps], pshape, stride_ratio=1.0, validation=0.25, seed=0)
print(f"{plan.train_count} training patches, {plan.val_count} validation patches of {pshape}")
x, y = extract(ps, plan.train[0][0], pshape, spec)
print("one patch: input", tuple(x.shape), "labels", tuple(y.shape), "classes present", np.unique(y))
"""),
    md("""
**Exercise 1.** Change `stride_ratio` to 0.5. How many patches now? Why do overlapping patches
add less information than their number suggests?

## 2. Losses when a class is rare

Membranes cover ~15 % of the pixels. Plain cross-entropy is dominated by the interior; Dice
(per-class overlap) weighs both classes equally. Train the same model with each loss.
"""),
    code("""
def fit(
    loss="dice_ce",
    dim="2D",
    slices=1,
    patch=48,
    validation=0.25,
    aug=True,
    sets=None,
    epochs=EPOCHS,
):
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=2,
        input_dimension=dim,
        slices=slices,
        parameters={"filters": 8, "depth": 3},
    )
    model = nbseg.generate_model(spec)
    params = nbseg.TrainingParams(
        patch_size=patch,
        epochs=epochs,
        loss=loss,
        seed=0,
        augmentation=None if aug else nbseg.AugmentationParams.disabled(),
    )
    res = nbseg.train(
        model, sets or [nbseg.TrainingSet(ds.image, ds.labels)], params, validation=validation
    )
    seg = nbseg.segment(model, ds.image)
    return res.history, nbseg.evaluate(seg, ds.truth)


loss_runs = {loss: fit(loss=loss) for loss in ("cross_entropy", "dice")}
for loss, (_, m) in loss_runs.items():
    print(
        f"{loss:14s} membrane Dice {m['dice_membrane']:.3f}  interior Dice {m['dice_interior']:.3f}"
    )
curves({k: h for k, (h, _) in loss_runs.items()}, "val_dice", "validation Dice per epoch")
"""),
    md("""
**Exercise 2.** Try `loss="focal"` and `loss="tversky"` (which penalises missed membranes more
than false alarms). Which gives the thinnest, most continuous membranes?

## 3. Over-fitting and validation

With a single labelled slice and many epochs, the training loss keeps falling while the
validation loss stops improving and rises: the model memorises. Early stopping watches
`val_loss` and keeps the best epoch.
"""),
    code("""
one = ds.labels.where(ds.labels.z == ds.z[1], -1)  # keep only one labelled slice
hist, m = fit(sets=[nbseg.TrainingSet(ds.image, one)], aug=False, validation=0.3, epochs=2 * EPOCHS)
best = min(hist, key=lambda r: r["val_loss"])
print(f"best val_loss at epoch {best['epoch']} of {len(hist)}; Dice on all slices {m['dice']:.3f}")
fig = curves({"loss": hist}, "loss", "training vs validation loss")
plt.plot(
    [r["epoch"] for r in hist],
    [r["val_loss"] for r in hist],
    colors=["orange"],
    labels=["val_loss"],
    display_legend=True,
)
fig
"""),
    md("""
**Exercise 3.** Add `early_stopping=True, patience=5` to the parameters in `fit`. At which epoch
does it stop, and is the score on unseen slices better or worse?

## 4. Augmentation

Flips, rotations, zoom, shear, elastic deformation and intensity changes make new training
patches from old ones. The image is resampled bilinearly, the labels with nearest neighbour,
so they stay aligned. Below: one patch and four augmented versions (labels overlaid).
"""),
    code("""
xb = torch.as_tensor(x)[None].repeat(4, 1, 1, 1)
yb = torch.as_tensor(y)[None].repeat(4, 1, 1)
aug = nbseg.AugmentationParams(rotation=30, zoom=(0.8, 1.2), shear=5, elastic=True, noise=0.05)
xa, ya = augment_batch(xb, yb, aug, 2, torch.Generator().manual_seed(0))
widgets.HBox(
    [nbseg.show(x[0], y, width=150)]
    + [nbseg.show(xa[i, 0].numpy(), ya[i].numpy(), width=150) for i in range(4)]
)
"""),
    code("""
aug_runs = {"with augmentation": fit(aug=True), "without": fit(aug=False)}
for name, (_, m) in aug_runs.items():
    print(f"{name:18s} mean Dice on all slices {m['dice']:.3f}")
"""),
    md("""
**Exercise 4.** Which augmentation would be *wrong* for this data? (Hint: would you flip a
volume whose top and bottom differ physically? rotate an image with a preferred direction?)

## 5. 2D vs 2.5D vs 3D

2.5D gives the network the neighbouring slices as channels; 3D convolves across slices too.
More context can help — and costs memory and time. Note the memory estimate of each.
"""),
    code("""
for dim, slices in (("2D", 1), ("2.5D", 3), ("3D", 1)):
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=2,
        input_dimension=dim,
        slices=slices,
        parameters={"filters": 8, "depth": 3},
    )
    patch = (4, 48, 48) if dim == "3D" else 48
    est = nbseg.TrainingParams(patch_size=patch).memory_estimate(spec)
    hist, m = fit(dim=dim, slices=slices, patch=patch)
    print(f"{dim:5s} Dice {m['dice']:.3f}  {hist[-1]['time']:5.1f} s  {est}")
"""),
    md("""
**Exercise 5.** The synthetic cells drift slowly from section to section. Generate
`nbseg.datasets.membranes(noise=3)`: does 2.5D gain more when the slices are noisier? Why?
"""),
]

# ------------------------------------------------------------------------------------------
NOTEBOOKS["05_big_volumes.ipynb"] = [
    md("""
# Big volumes and scale-out

**What you learn:** how to segment a volume that does not fit in memory (streamed block by block
from a zarr store with dask, written back to zarr: memory stays flat whatever the volume size),
how to spread that over a `dask.distributed` cluster, and how to run the very same training
from the command line — on a workstation, or on a GPU cluster with Lightning's DDP.
"""),
    code(
        setup("""
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import ipywidgets as widgets
import tifffile
import xarray as xr

import nbseg
""")
    ),
    md("""
## 1. A model (small and quick: the point here is the volume, not the model)
"""),
    code("""
sample = nbseg.datasets.fibres(shape=(8, 96, 96), labelled_slices=[2, 5])
spec = nbseg.ModelSpec(architecture="unet", class_count=2, parameters={"filters": 8, "depth": 3})
model = nbseg.generate_model(spec)
params = nbseg.TrainingParams(patch_size=48, epochs=2 if SMALL else 15, seed=0)
tset = nbseg.TrainingSet(sample.image, sample.labels)
nbseg.train(model, [tset], params, validation=0.2)
model
"""),
    md("""
## 2. A volume on disk, opened lazily

We write a volume slab by slab into a zarr store (a real scan would come as a zarr store or a
TIFF stack). `xr.open_zarr` opens it **lazily**: a dask-backed DataArray, nothing read yet.
"""),
    code("""
nz, ny, nx = (16, 128, 128) if SMALL else (96, 512, 512)
slab = 8
store = "big_volume.zarr"
zeros = da.zeros((nz, ny, nx), dtype="uint16", chunks=(slab, ny, nx))
xr.Dataset({"image": (("z", "y", "x"), zeros)}).to_zarr(store, mode="w", compute=False)
for i, z0 in enumerate(range(0, nz, slab)):  # one slab in memory at a time
    part = nbseg.datasets.fibres(shape=(slab, ny, nx), labelled_slices=[0], seed=i).image.values
    xr.Dataset({"image": (("z", "y", "x"), part)}).to_zarr(
        store, region={"z": slice(z0, z0 + slab)}
    )
big = xr.open_zarr(store)["image"]
print(big.shape, f"{big.nbytes / 2**20:.0f} MiB on disk,", "chunks", big.data.chunksize, "(lazy)")
"""),
    md("""
## 3. Stream it through the model into a zarr store

`nbseg.segment` sees a dask-backed input (or `out=`) and streams: each output block reads its
input region with a halo, predicts the tiles that meet it with the same Gaussian blending as the
in-memory path (so the result is identical, without seams), and is written to `out` at once.
A progress callback reports blocks done, voxels/s and the ETA.
"""),
    code("""
bar = widgets.IntProgress(description="blocks")
info = widgets.Label()
display(widgets.HBox([bar, info]))


def progress(p):  # one nbseg.progress.Progress record per block written
    bar.max, bar.value = p.total, p.done
    if p.eta_s is not None:
        info.value = f"{p.extra['voxels_per_s'] / 1e6:.2f} Mvoxel/s, ETA {p.eta_s:.0f} s"


rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
labels = nbseg.segment(model, big, out="big_labels.zarr", progress=progress, overwrite=True)
wall = time.perf_counter() - t0
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(
    f"{big.size / wall / 1e6:.2f} Mvoxel/s; peak RSS grew by {rss1 - rss0:.0f} MiB "
    f"for a {big.nbytes / 2**20:.0f} MiB volume; result is lazy: {type(labels.data).__name__}"
)
"""),
    code("""
# the streamed result equals the in-memory one on a piece that fits in memory
piece = big.isel(z=slice(0, 8)).load()
same = (nbseg.segment(model, piece).values == labels.isel(z=slice(0, 8)).values).mean()
print(f"agreement with in-memory segment on the first 8 slices: {same:.4%}")
nbseg.show(big.isel(z=4), labels.isel(z=4))
"""),
    md("""
### Your own files: a TIFF stack in, OME-Zarr labels out

A scan usually comes as a multi-page TIFF, a folder of slices, an OME-Zarr, HDF5, NIfTI or MRC
file. `nbseg.open_image` opens any of them **lazily**, with the file's voxel size as the
coordinates; `segment(..., out="….ome.zarr")` streams the labels into an OME-Zarr label image
(class names and colours, downsampled levels) that napari, Fiji or `open_image` read back.
`nbseg.save_labels` writes labels to `.ome.zarr`, ImageJ `.tif`, `.nii.gz`, `.zarr` or `.nc`.
"""),
    code("""
# the volume as an ImageJ TIFF stack with its voxel size (0.5 µm pixels, 2 µm slices), slab by slab
pages = (p for z0 in range(0, nz, slab) for p in big.isel(z=slice(z0, z0 + slab)).values)
tifffile.imwrite(
    "scan.tif",
    pages,
    shape=big.shape,
    dtype=big.dtype,
    imagej=True,
    resolution=(1 / 0.5, 1 / 0.5),
    metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
)
scan = nbseg.open_image("scan.tif")  # lazy: nothing read yet
print(scan.shape, "voxel size", scan.attrs["voxel_size"], scan.coords["x"].attrs["units"])
print("lazy:", type(scan.data).__name__, "- chunks", scan.data.chunksize)
"""),
    code("""
seg = nbseg.segment(model, scan, out="scan_labels.ome.zarr", overwrite=True)  # streamed
back = nbseg.open_image("scan_labels.ome.zarr")
print(back.attrs["class_names"], back.attrs["class_colors"], "levels", back.attrs["levels"])
print("same labels as from the zarr store:", bool((back.values == labels.values).all()))
"""),
    md("""
## 4. The same on a `dask.distributed` cluster

Pass a `Client`: blocks become tasks on its workers (here a local in-process cluster; on a real
cluster every worker must see the input and output paths, e.g. a shared filesystem or S3).
"""),
    code("""
from dask.distributed import Client, LocalCluster

cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
with cluster, Client(cluster) as client:
    dist = nbseg.segment(model, big, out="big_labels_dist.zarr", client=client, overwrite=True)
    print("distributed == local:", bool((dist.values == labels.values).all()))
"""),
    md("""
## 5. Training from the command line, and on a GPU cluster

A training config (YAML) holds the model spec, the training sets (paths to zarr / TIFF / npy),
the training parameters and the trainer options. The widgets write one too (*Train* tab →
*Export config*). `nbseg train` runs the same engine headless:
"""),
    code("""
# in-memory arrays are written next to the config (paths in it are relative to its folder)
cfg = nbseg.TrainingConfig.from_objects(
    spec, params, tset, output="cli_model.nbseg", data_dir="cli_run"
)
cfg.to_yaml("cli_run/train.yaml")
print(Path("cli_run/train.yaml").read_text()[:500], "...")
cmd = [sys.executable, "-m", "nbseg.cli", "train", "cli_run/train.yaml", "--epochs", "1"]
done = subprocess.run(cmd, capture_output=True, text=True)
print(done.stdout[-400:], done.stderr[-2000:] if done.returncode else "")
print(nbseg.load_model("cli_run/cli_model.nbseg"))
"""),
    md("""
On a GPU machine or cluster, Lightning's own strategies carry the same command further:

```bash
nbseg train cli_run/train.yaml --accelerator gpu --devices 4 --strategy ddp            # one node, 4 GPUs
srun --nodes 2 --ntasks-per-node 4 --gpus-per-node 4 \\
     nbseg train cli_run/train.yaml --accelerator gpu --devices 4 --num-nodes 2 --strategy ddp   # SLURM
torchrun --nnodes 2 --nproc-per-node 4 ... -m nbseg.cli train cli_run/train.yaml --devices 4 --num-nodes 2
```

Only rank 0 writes the model and prints. Segment the result with
`nbseg segment cli_run/cli_model.nbseg big_volume.zarr labels.zarr`. Inside a notebook, use
`nbseg.train(..., trainer_kwargs={"strategy": "ddp_notebook", "devices": 2})`.
"""),
]


def build(names: list[str] | None = None, out: Path = ROOT) -> list[Path]:
    """Write the notebooks ``names`` (all by default) into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(NOTEBOOKS):
        nb = nbformat.v4.new_notebook()
        nb.cells = NOTEBOOKS[name]
        for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives no spurious diffs
            cell.id = f"cell-{i:02d}"
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        nbformat.write(nb, out / name)
        paths.append(out / name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"notebooks to write (default: all of {list(NOTEBOOKS)})"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT, help="folder to write into (default: notebooks/)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"unknown notebooks {unknown}; choose from {list(NOTEBOOKS)}")
    for path in build(args.names, args.out):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
