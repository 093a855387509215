"""Streaming segmentation of big volumes: peak memory and speed against volume size.

Each volume is a zarr store (synthetic by default, written slab by slab; ``--ct`` uses the real
CT volumes of ../shared/data/ct). Every size runs in a fresh child process that imports nbseg,
warms the model up on a small volume, resets the kernel's peak-RSS counter (VmHWM), then
segments the lazily opened zarr volume into a zarr store with ``nbseg.segment(..., out=)``.
Printed per size: voxels, in-memory float32 size of the volume, peak RSS growth over the
warmed-up baseline, wall time, voxels/s, tiles predicted (streaming predicts a tile once per
block it meets: compare with the in-memory count). ``--in-memory`` adds the same run with the volume
loaded into memory and segmented without ``out=`` (the in-memory path), for comparison.

``--sources zarr,tiff,slices`` also writes each volume as a multi-page TIFF and as a folder of
one TIFF per slice and segments them as ``nbseg.open_image`` opens them (lazily: tifffile's
zarr store, one dask task per slice file); the table then gives each source's throughput
relative to the zarr source of the same size. ``--open N`` times ``nbseg.open_image`` on a
folder of N slices and on a sparse 4 GB multi-page TIFF, each in a fresh process.
``--repeat N`` runs every source N times in ABBA order (zarr, tiff, slices, slices, tiff, zarr,
...) and reports the mean wall time, so a drift of a shared machine's speed during the run
does not land on one source.

    python benchmarks/streaming.py                       # 2D model, 3 synthetic sizes
    python benchmarks/streaming.py --dim 3D --sizes 32,64,128,256
    python benchmarks/streaming.py --ct                  # ../shared/data/ct volumes
    python benchmarks/streaming.py --client              # on a dask.distributed LocalCluster
    python benchmarks/streaming.py --yx 512 --sizes 64,256,1024 --sources zarr,tiff,slices
    python benchmarks/streaming.py --yx 512 --sizes 1024 --sources zarr,tiff,slices --repeat 2
    python benchmarks/streaming.py --open 1000 --sizes ''   # only the opening times
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CT = ROOT / ".." / "shared" / "data" / "ct"


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM", "VmRSS")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) * 1024
    return out


def _reset_peak() -> int:
    """Free what can be freed, reset the peak RSS to the current RSS; return it (bytes)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status()["VmRSS"]


def tiny_model(dim: str, filters: int, depth: int, patch: int):
    import nbseg

    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=3,
        input_dimension=dim,
        parameters={"filters": filters, "depth": depth},
        **({"slices": 3} if dim == "2.5D" else {}),
    )
    model = nbseg.generate_model(spec)
    model.normalisation = nbseg.Normalisation(low=[0.0], high=[255.0])
    model.params = nbseg.TrainingParams(patch_size=patch)
    return model


def write_synthetic(path: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> None:
    """A uint8 volume of blobs + noise, written slab by slab (never whole in memory)."""
    import numpy as np
    import zarr

    arr = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint8", overwrite=True)
    rng = np.random.default_rng(0)
    _, y, x = np.indices((1, *shape[1:]))
    for z0 in range(0, shape[0], chunks[0]):
        z1 = min(shape[0], z0 + chunks[0])
        slab = rng.normal(60, 20, (z1 - z0, *shape[1:]))
        for k in range(z1 - z0):
            cy, cx = 0.5 * shape[1] * (1 + np.sin(z0 + k)), 0.5 * shape[2] * (1 + np.cos(z0 + k))
            slab[k][((y[0] - cy) ** 2 + (x[0] - cx) ** 2) < (shape[1] / 5) ** 2] += 120
        arr[z0:z1] = np.clip(slab, 0, 255).astype(np.uint8)


def write_tiff_stack(zarr_path: Path, path: Path) -> None:
    """The zarr volume as one multi-page TIFF, written slab by slab."""
    import numpy as np
    import tifffile
    import zarr

    arr = zarr.open_array(str(zarr_path), mode="r")

    def pages():
        step = arr.chunks[0]
        for z0 in range(0, arr.shape[0], step):
            yield from np.asarray(arr[z0 : z0 + step])

    tifffile.imwrite(path, pages(), shape=arr.shape, dtype=arr.dtype, metadata={"axes": "ZYX"})


def write_slice_folder(zarr_path: Path, folder: Path) -> None:
    """The zarr volume as a folder of one 2D TIFF per slice."""
    import tifffile
    import zarr

    arr = zarr.open_array(str(zarr_path), mode="r")
    folder.mkdir()
    for z in range(arr.shape[0]):
        tifffile.imwrite(folder / f"slice_{z:05d}.tif", arr[z])


def open_child(args: argparse.Namespace) -> None:
    """Time nbseg.open_image on a folder of ``--open`` slices and a sparse 4 GB TIFF."""
    import numpy as np
    import tifffile

    import nbseg

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "slices"
        folder.mkdir()
        page = np.zeros((args.yx, args.yx), np.uint16)
        for z in range(args.open):
            tifffile.imwrite(folder / f"slice_{z:05d}.tif", page)
        big = Path(tmp) / "big.tif"  # 4,000 pages of 1024² uint8: 4 GB, sparse on disk
        tifffile.imwrite(big, shape=(4000, 1024, 1024), dtype="uint8", metadata={"axes": "ZYX"})
        nbseg.open_image(Path(tmp) / "slices" / "slice_00000.tif")  # imports, once
        for name, path in (("folder", folder), ("tiff", big)):
            t0 = time.perf_counter()
            img = nbseg.open_image(path)
            out[name] = {"s": time.perf_counter() - t0, "shape": list(img.shape)}
            out[name]["bytes"] = int(img.nbytes)
    print(json.dumps(out))


def write_ct(path: Path, tif: Path, chunks: tuple[int, int, int]) -> tuple[int, int, int]:
    import tifffile
    import zarr

    vol = tifffile.imread(tif)
    arr = zarr.create_array(
        str(path), shape=vol.shape, chunks=chunks, dtype=vol.dtype, overwrite=True
    )
    arr[:] = vol
    return tuple(vol.shape)


def child(args: argparse.Namespace) -> None:
    import numpy as np
    import xarray as xr
    import zarr

    import nbseg

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    model = tiny_model(args.dim, args.filters, args.depth, args.patch)
    warm = xr.DataArray(np.zeros((4, 96, 96), np.uint8), dims=("z", "y", "x"))
    nbseg.segment(model, warm.chunk({"z": 2})).compute()
    client = None
    if args.client:
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=1, threads_per_worker=2, processes=False))
    if args.source == "zarr":
        src = xr.DataArray(
            __import__("dask.array").array.from_zarr(zarr.open_array(args.volume, mode="r")),
            dims=("z", "y", "x"),
        )
    else:  # a multi-page TIFF or a folder of slices, opened lazily
        src = nbseg.open_image(args.volume)
    if args.in_memory:
        src = src.load()
    tiles = []
    model.network.register_forward_hook(lambda mod, i, o: tiles.append(i[0].shape[0]))
    base = _reset_peak()
    t0 = time.perf_counter()
    if args.in_memory:
        nbseg.segment(model, src, overlap=args.overlap)
    else:
        out = Path(args.volume).with_name(Path(args.volume).stem + ".labels.zarr")
        nbseg.segment(model, src, out=str(out), overlap=args.overlap, client=client)
    wall = time.perf_counter() - t0
    peak = _status()["VmHWM"]
    if not args.in_memory:
        import shutil

        shutil.rmtree(out, ignore_errors=True)  # big volumes: one labels store at a time
    if client is not None:
        client.close()
    print(json.dumps({"growth": peak - base, "base": base, "wall": wall, "tiles": sum(tiles)}))


def run_child(volume: Path, args: argparse.Namespace, in_memory: bool, source: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(volume),
        "--source",
        source,
        "--dim",
        args.dim,
        "--filters",
        str(args.filters),
        "--depth",
        str(args.depth),
        "--patch",
        str(args.patch),
        "--overlap",
        str(args.overlap),
    ]
    if in_memory:
        cmd.append("--in-memory")
    if args.client:
        cmd.append("--client")
    if args.torch_threads:
        cmd += ["--torch-threads", str(args.torch_threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dim", default="2D", choices=["2D", "2.5D", "3D"])
    ap.add_argument("--sizes", default="32,64,128", help="synthetic depths (z), comma separated")
    ap.add_argument("--yx", type=int, default=256, help="synthetic slice size (y = x)")
    ap.add_argument("--ct", action="store_true", help="use ../shared/data/ct/*.tif volumes")
    ap.add_argument("--filters", type=int, default=8)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--in-memory", action="store_true", help="also run the in-memory path")
    ap.add_argument("--client", action="store_true", help="run on a dask.distributed client")
    ap.add_argument(
        "--torch-threads", type=int, default=0, help="torch threads (default: nbseg's choice)"
    )
    ap.add_argument(
        "--sources",
        default="zarr",
        help="volume sources, comma separated: zarr, tiff (multi-page), slices (a folder)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per source, in ABBA order (wall: the mean; peak RSS: the largest)",
    )
    ap.add_argument("--open", type=int, default=0, help="time opening a folder of N slices")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--source", default="zarr", help=argparse.SUPPRESS)
    ap.add_argument("--open-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.open_child:
        open_child(args)
        return
    if args.child:
        args.volume = args.child
        child(args)
        return
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = set(sources) - {"zarr", "tiff", "slices"}
    if unknown:
        raise SystemExit(f"--sources: unknown {sorted(unknown)}; use zarr, tiff, slices")
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux (/proc/self/clear_refs) to measure peak memory")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        volumes = []
        if args.ct:
            tifs = sorted(CT.glob("*.tif"), key=lambda p: p.stat().st_size)
            if not tifs:
                raise SystemExit(f"no CT volumes in {CT}")
            for tif in tifs:
                path = Path(tmp) / f"{tif.stem}.zarr"
                shape = write_ct(path, tif, (32, 128, 128))
                volumes.append((tif.stem, path, shape))
        else:
            for nz in (int(s) for s in args.sizes.split(",") if s.strip()):
                shape = (nz, args.yx, args.yx)
                path = Path(tmp) / f"synthetic_{nz}.zarr"
                write_synthetic(path, shape, (16, 128, 128))
                volumes.append((f"synthetic {nz}x{args.yx}x{args.yx}", path, shape))
        zarr_rate: dict[str, float] = {}
        for name, path, shape in volumes:
            runs = [("zarr", path, False)]
            if args.in_memory:
                runs.append(("zarr", path, True))
            if "tiff" in sources:
                tif = path.with_suffix(".tif")
                write_tiff_stack(path, tif)
                runs.append(("tiff", tif, False))
            if "slices" in sources:
                folder = path.with_suffix(".slices")
                write_slice_folder(path, folder)
                runs.append(("slices", folder, False))
            if "zarr" not in sources:
                runs = [r for r in runs if r[0] != "zarr" or r[2]]
            results: dict[tuple[str, bool], list[dict]] = {}
            for rep in range(args.repeat):  # ABBA order: drift of the machine cancels out
                for source, src_path, in_memory in runs if rep % 2 == 0 else runs[::-1]:
                    r = run_child(src_path, args, in_memory, source)
                    results.setdefault((source, in_memory), []).append(r)
            for source, _, in_memory in runs:
                reps = results[(source, in_memory)]
                r = {
                    "wall": sum(x["wall"] for x in reps) / len(reps),
                    "growth": max(x["growth"] for x in reps),
                    "tiles": reps[0]["tiles"],
                }
                vox = shape[0] * shape[1] * shape[2]
                rate = vox / r["wall"]
                if source == "zarr" and not in_memory:
                    zarr_rate[name] = rate
                rows.append(
                    (
                        name,
                        ("in-memory" if in_memory else "streamed") + f" ({source})",
                        vox,
                        vox * 4 / 2**20,
                        r["growth"] / 2**20,
                        r["wall"],
                        vox / r["wall"],
                        r["tiles"],
                        rate / zarr_rate[name] if name in zarr_rate and not in_memory else None,
                    )
                )
    if args.open:
        res = subprocess.run(
            [sys.executable, __file__, "--open-child", "--open", str(args.open), "--yx", "512"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if res.returncode != 0:
            raise SystemExit(f"child failed:\n{res.stderr[-3000:]}")
        opened = json.loads(res.stdout.strip().splitlines()[-1])
        for key, what in (("folder", f"folder of {args.open} slices of 512²"), ("tiff", "TIFF")):
            o = opened[key]
            print(
                f"open_image({what}, {o['bytes'] / 1e9:.1f} GB as {tuple(o['shape'])}): "
                f"{o['s']:.3f} s (lazy)"
            )
    if not rows:
        return
    print(
        f"model: unet {args.dim} filters={args.filters} depth={args.depth} window={args.patch} "
        f"overlap={args.overlap} torch threads={args.torch_threads or 'default'}"
        f"{f', {args.repeat} runs per source (ABBA), mean wall' if args.repeat > 1 else ''}"
        f"{' (distributed client)' if args.client else ''}"
    )
    head = (
        "volume",
        "mode (source)",
        "voxels",
        "f32 MiB",
        "peak RSS MiB",
        "wall s",
        "voxels/s",
        "vs zarr",
        "tiles",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]:,} | {r[3]:.0f} | {r[4]:.0f} | {r[5]:.1f} | {r[6]:,.0f} "
            f"| {'' if r[8] is None else f'{r[8]:.2f}'} "
            f"| {'n/a (workers hold copies)' if args.client else f'{r[7]:,}'} |"
        )


if __name__ == "__main__":
    main()
