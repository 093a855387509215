"""Exception types raised by nbseg.

Every message says what is wrong (naming the arrays, shapes or values involved) and how to
fix it.
"""

from __future__ import annotations


class NbsegError(Exception):
    """Base class of all nbseg errors."""


class InputError(NbsegError, ValueError):
    """Bad input data: geometry, dtype, values, labels or mask."""


class SpecError(NbsegError, ValueError):
    """An invalid model specification (architecture, class count, input dimension ...)."""


class ParamsError(NbsegError, ValueError):
    """An invalid training parameter."""


class ModelFileError(NbsegError, OSError):
    """A model file that cannot be read, is not an nbseg model, or is damaged."""


class TrainingError(NbsegError, RuntimeError):
    """Training could not run or stopped abnormally (e.g. NaN loss)."""
