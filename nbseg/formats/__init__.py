"""Real files in and out: :func:`open_image` reads microscopy, CT, MRI and EM formats lazily,
with voxel sizes; :func:`save_labels` writes label images other tools read (OME-Zarr labels,
ImageJ TIFF, NIfTI, zarr, netCDF). :mod:`nbseg.io` (``read_array`` / ``write_array``, used by
configs and the command line) reads and writes through these.

Optional formats need ``pip install nbseg[formats]`` (h5py, nibabel, mrcfile, Pillow); a
missing package is named when a file needs it.
"""

from ._common import FORMATS_TEXT, READ_FORMATS
from .readers import detect, is_input_path, open_array, open_image
from .writers import WRITE_SUFFIXES, output_suffix, save_labels, write_file

__all__ = [
    "FORMATS_TEXT",
    "READ_FORMATS",
    "WRITE_SUFFIXES",
    "detect",
    "is_input_path",
    "open_array",
    "open_image",
    "output_suffix",
    "save_labels",
    "write_file",
]
