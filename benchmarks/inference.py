"""``nbseg.segment`` vs MONAI ``sliding_window_inference`` on the real CT volumes.

Same network (the default U-Net, random but fixed weights: agreement and speed do not depend
on training), same normalised input, same window, overlap 0.25 and Gaussian blending. MONAI
blends the softmax probabilities (the network is wrapped as ``softmax(net(x))``, as nbseg
blends them). Reports the max abs difference of the probabilities, the label agreement and
the median time ratio nbseg / MONAI over ``--repeats`` interleaved runs (target ≤ 1.0).
The volumes are ``../shared/data/ct/*.tif`` (skipped with a message when absent), centre-cropped
to ``--size`` voxels per axis.

    python benchmarks/inference.py                       # 2D and 3D, crop 96, ~2 min
    python benchmarks/inference.py --size 128 --dims 3D --window 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, machine_line, print_table


def crop(vol: np.ndarray, size: int) -> np.ndarray:
    sl = tuple(slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + size) for n in vol.shape)
    return np.ascontiguousarray(vol[sl])


def run_nbseg(model, image, batch: int) -> np.ndarray:
    import nbseg

    return nbseg.segment(model, image, probabilities=True, overlap=0.25, batch_size=batch).values


def run_monai(net, x, dim: str, w: int, batch: int) -> np.ndarray:
    import torch
    from monai.inferers import sliding_window_inference

    def predictor(t):
        return net(t).softmax(1)

    with torch.inference_mode():
        if dim == "3D":
            out = sliding_window_inference(
                x[None, None], (w, w, w), batch, predictor, 0.25, "gaussian"
            )
            return out[0].numpy()
        out = sliding_window_inference(x[:, None], (w, w), batch, predictor, 0.25, "gaussian")
        return out.movedim(1, 0).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=96, help="centre crop per axis")
    ap.add_argument("--dims", default="2D,3D")
    ap.add_argument("--window", type=int, default=64, help="window (2D: y-x; 3D: cube)")
    ap.add_argument("--volumes", default="fibers,cement,shell")
    ap.add_argument("--batch", type=int, default=8, help="tiles per forward (sw_batch_size)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    files = sorted((DATA / "ct").glob("*.tif")) if (DATA / "ct").exists() else []
    files = [f for f in files if f.name.split("_")[0] in args.volumes.split(",")]
    if not files:
        print(f"no CT volumes under {DATA / 'ct'}; nothing to do")
        return 0
    import tifffile
    import torch
    import xarray as xr

    import nbseg

    torch.set_grad_enabled(False)
    print(machine_line())
    rows = []
    for f in files:
        vol = crop(tifffile.imread(f), args.size)
        image = xr.DataArray(vol, dims=("z", "y", "x"), name=f.stem)
        for dim in args.dims.split(","):
            spec = nbseg.ModelSpec(architecture="unet", class_count=3, input_dimension=dim)
            torch.manual_seed(0)
            model = nbseg.generate_model(spec)
            model.normalisation = nbseg.Normalisation.fit(
                [nbseg.TrainingSet(image, xr.zeros_like(image, dtype=np.int16))]
            )
            model.params = nbseg.TrainingParams(patch_size=args.window)
            net = model.network.eval()
            x = torch.from_numpy(model.normalisation.apply(vol.astype(np.float32), 0))
            w = args.window

            run_nb = partial(run_nbseg, model, image, args.batch)
            run_mo = partial(run_monai, net, x, dim, w, args.batch)
            run_nb(), run_mo()  # warm-up (first-call imports, oneDNN primitives)
            t_nb, t_mo = [], []
            p_nb = p_mo = None
            for r in range(args.repeats):
                order = [("nbseg", run_nb), ("monai", run_mo)]
                for name, fn in order if r % 2 == 0 else order[::-1]:
                    t0 = time.perf_counter()
                    out = fn()
                    dt = time.perf_counter() - t0
                    if name == "nbseg":
                        t_nb.append(dt)
                        p_nb = out
                    else:
                        t_mo.append(dt)
                        p_mo = out
            diff = float(np.abs(p_nb - p_mo).max())
            agree = float((p_nb.argmax(0) == p_mo.argmax(0)).mean())
            ratios = [a / b for a, b in zip(t_nb, t_mo)]
            rows.append(
                {
                    "volume": f.name.split("_")[0],
                    "crop": "×".join(map(str, vol.shape)),
                    "dim": dim,
                    "window": w,
                    "nbseg s": round(statistics.median(t_nb), 2),
                    "MONAI s": round(statistics.median(t_mo), 2),
                    "time ratio": round(statistics.median(ratios), 3),
                    "max |Δp|": f"{diff:.1e}",
                    "label agreement": f"{agree:.6f}",
                }
            )
            print(f"# {rows[-1]}", flush=True)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
