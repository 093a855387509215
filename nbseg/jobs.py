"""`BackgroundJob`: one long operation in a daemon thread, with Stop and readable state.

:class:`nbseg.TrainingRun` (training) and :class:`nbseg.SegmentationRun` (segmentation) are
background jobs. A job owns its thread, a :class:`threading.Event` that asks it to stop, a
lock, and the latest state, which any thread may read (widgets poll it, never the model)::

    job.start()          # returns at once
    job.status           # "idle", "running", "stopping", then "completed" / "stopped" /
                         # "failed" (subclasses may name other final states)
    job.progress         # the latest progress record (nbseg.progress.Progress or a dict)
    job.warnings         # warnings raised in the job's thread (messages, deduplicated)
    job.stop()           # asks the work to stop at its next check
    job.wait(timeout)    # blocks until the job ends; returns job.result
    job.error            # why it failed (None unless status == "failed")

Exceptions of the work never escape the thread: they become :attr:`BackgroundJob.error`
(an nbseg error as its message, anything else as ``"Type: message"``) and ``status =
"failed"``. Work that sees its stop event raises :class:`Cancelled`, which ends the job as
``"stopped"``.

Warnings
--------
One dispatcher replaces :func:`warnings.showwarning` (installed when a job starts, if it is not
already the active handler) and routes every shown warning by thread: a warning raised in a
job's thread is collected on that job and not printed; any other goes to the handler that was
active before (the default printer, pytest's recorder, IPython's ...). User-facing warnings —
category :class:`UserWarning`, :class:`ResourceWarning` or :class:`RuntimeWarning` (and
subclasses, e.g. Lightning's ``PossibleUserWarning``), or raised by nbseg's own code — go to
:attr:`BackgroundJob.warnings`; the rest (third-party :class:`FutureWarning` /
:class:`DeprecationWarning` about library internals) go to
:attr:`BackgroundJob.library_warnings`, also unprinted. What decides "raised by nbseg" is the
code that called :func:`warnings.warn`, not the file the warning is attributed to: a library
that warns with a ``stacklevel`` pointing at its nbseg caller is still the library. Only the
job's own thread is routed: threads the work starts itself (e.g. dask's thread pool) warn as
usual.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import NbsegError
from .progress import Progress

__all__ = ["BackgroundJob", "Cancelled", "describe_error"]

_log = logging.getLogger(__name__)

USER_CATEGORIES: tuple[type[Warning], ...] = (UserWarning, ResourceWarning, RuntimeWarning)
"""Warning categories that count as the user's, whatever module raises them."""

_NBSEG_DIR = str(Path(__file__).resolve().parent) + os.sep


class Cancelled(NbsegError):
    """Raised by long operations (e.g. :func:`nbseg.segment`) when their stop event is set."""


def describe_error(err: BaseException) -> str:
    """An exception as one line for users: nbseg errors by their message, others as
    ``"Type: message"``."""
    return str(err) if isinstance(err, NbsegError) else f"{type(err).__name__}: {err}"


# -- the warnings dispatcher ------------------------------------------------------------
_owners: dict[int, BackgroundJob] = {}
"""Thread id → the job running in that thread."""
_owners_lock = threading.Lock()
_previous: Any = None
"""The ``warnings.showwarning`` that was active when the dispatcher was installed."""
_reentry = threading.local()


def _dispatch(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` while jobs exist: a job's thread's warnings go to the job."""
    job = _owners.get(threading.get_ident())
    if job is not None:
        job._capture(category, str(message), filename, _raiser())
        return
    previous = _previous
    if getattr(_reentry, "active", False) or previous is None or previous is _dispatch:
        previous = warnings._showwarning_orig  # type: ignore[attr-defined]
    if previous is warnings._showwarning_orig:  # type: ignore[attr-defined]
        # the default hook: through the active implementation (pytest's recorder, ...)
        msg = warnings.WarningMessage(message, category, filename, lineno, file, line)
        warnings._showwarnmsg_impl(msg)  # type: ignore[attr-defined]
        return
    _reentry.active = True  # a handler that calls the dispatcher back ends in the default
    try:
        previous(message, category, filename, lineno, file, line)
    finally:
        _reentry.active = False


def _install_dispatcher() -> None:
    """Make :func:`_dispatch` the active ``warnings.showwarning`` (once; again only after
    something else, e.g. ``warnings.catch_warnings``, replaced it)."""
    global _previous
    with _owners_lock:
        if warnings.showwarning is not _dispatch:
            _previous = warnings.showwarning
            warnings.showwarning = _dispatch


def _raiser() -> str | None:
    """The file of the code that called :func:`warnings.warn` (the first frame above the
    dispatcher outside the warnings machinery), None when unknown."""
    try:
        frame = sys._getframe(1)
    except ValueError:  # pragma: no cover - no Python frames
        return None
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", __name__):
        frame = frame.f_back  # type: ignore[assignment]
    return None if frame is None else frame.f_code.co_filename


def _in_nbseg(path: str) -> bool:
    try:
        return str(Path(path).resolve()).startswith(_NBSEG_DIR)
    except (OSError, RuntimeError, ValueError):
        return str(path).startswith(_NBSEG_DIR)


def is_user_warning(category: type[Warning], filename: str = "", origin: str | None = None) -> bool:
    """True for warnings meant for the user (see the module docstring): a user category,
    or one raised by nbseg — ``origin``, the file of the code that called ``warnings.warn``
    when known, else ``filename``, the file the warning is attributed to."""
    if isinstance(category, type) and issubclass(category, USER_CATEGORIES):
        return True
    return _in_nbseg(origin if origin is not None else filename)


# -- the job ----------------------------------------------------------------------------
class BackgroundJob:
    """A long operation in a daemon thread; subclasses implement :meth:`_run`.

    Attributes
    ----------
    status
        ``"idle"`` before :meth:`start`, ``"running"``, ``"stopping"`` after :meth:`stop`, then
        the final status: ``"completed"``, ``"stopped"`` (the work raised :class:`Cancelled`
        or returned after a stop request), ``"failed"``, or what :meth:`_final_status` says.
    result
        What :meth:`_run` returned (None until it did).
    error
        One line saying why the job failed, else None; :attr:`exception` is the exception.
    progress
        The latest progress record the work reported (see :meth:`_set_progress`).
    warnings, library_warnings
        Messages of the warnings raised in the job's thread, each once (module docstring).
    stop_event
        Set by :meth:`stop`; the work checks it.
    """

    kind = "job"
    """Names the job in messages and its thread (``nbseg-<kind>``)."""

    def __init__(self) -> None:
        self.status = "idle"
        self.result: Any = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.progress: Progress | dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.library_warnings: list[str] = []
        self.warning_log: list[tuple[str, str]] = []
        """``(category name, message)`` of each entry of :attr:`warnings`, in order."""
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()  # nothing to wait for before start()
        self._thread: threading.Thread | None = None
        self._done_callbacks: list[Callable[[BackgroundJob], Any]] = []

    # -- public API -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True from :meth:`start` until the job's final state is set."""
        return not self._done.is_set()

    @property
    def stop_requested(self) -> bool:
        return self.stop_event.is_set()

    def start(self) -> BackgroundJob:
        """Start the work in a daemon thread; returns the job at once."""
        with self._lock:
            if self.running:
                raise self._already_running()
            self.stop_event.clear()
            self._done.clear()
            self.status = "running"
            self.error = None
            self.exception = None
        _install_dispatcher()
        self._thread = threading.Thread(target=self._main, name=f"nbseg-{self.kind}", daemon=True)
        try:
            self._thread.start()
        except BaseException as err:  # e.g. no more threads: the job ends failed at once
            self._end("failed", None, err)
            raise
        return self

    def stop(self) -> None:
        """Ask the work to stop at its next check (status ``"stopping"`` until it does)."""
        with self._lock:
            if self.running:
                self.status = "stopping"
            self.stop_event.set()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job ends (or ``timeout`` seconds); returns :attr:`result`."""
        self._done.wait(timeout)
        return self.result

    def add_done_callback(self, fn: Callable[[BackgroundJob], Any]) -> None:
        """Call ``fn(job)`` when the job has ended (in the job's thread, after its final state
        is set and :meth:`wait` returns); an exception of ``fn`` is logged, not raised."""
        self._done_callbacks.append(fn)

    def raise_if_stopped(self) -> None:
        """For :meth:`_run`: raise :class:`Cancelled` when :meth:`stop` was called."""
        if self.stop_event.is_set():
            raise Cancelled(f"The {self.kind} was stopped.")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status}>"

    # -- for subclasses ---------------------------------------------------------------
    def _run(self) -> Any:
        """The work (in the job's thread); returns the result. Check :attr:`stop_event`."""
        raise NotImplementedError

    def _final_status(self, result: Any) -> str:
        """The status after :meth:`_run` returned ``result``."""
        return "stopped" if self.stop_event.is_set() else "completed"

    def _final_error(self, result: Any) -> str | None:
        """The error after :meth:`_run` returned ``result`` (None: it did not fail)."""
        return None

    def _partial_result(self, err: BaseException) -> Any:
        """The result to keep when :meth:`_run` raised ``err`` (default: ``err.result``)."""
        return getattr(err, "result", None)

    def _on_error(self, err: BaseException) -> None:
        """Called in the job's thread when :meth:`_run` raised (not for :class:`Cancelled`)."""

    def _already_running(self) -> NbsegError:
        return NbsegError(f"This {self.kind} is already running; wait for it or stop it first.")

    def _set_progress(self, record: Progress | dict[str, Any]) -> None:
        """Keep ``record`` as the latest :attr:`progress`."""
        with self._lock:
            self.progress = record

    # -- the thread ---------------------------------------------------------------------
    def _main(self) -> None:
        ident = threading.get_ident()
        with _owners_lock:
            _owners[ident] = self
        status, result = "failed", None
        error: BaseException | str | None = None
        try:
            try:
                result = self._run()
                status = self._final_status(result)
                error = self._final_error(result)
            except Cancelled:
                status = "stopped"
            except BaseException as err:  # captured in the state, never lost
                result = self._partial_result(err)
                error = err
                try:
                    self._on_error(err)
                except Exception:
                    _log.exception("The error handler of %r failed", self)
        finally:
            with _owners_lock:
                _owners.pop(ident, None)
            self._end(status, result, error)

    def _end(self, status: str, result: Any, error: BaseException | str | None) -> None:
        with self._lock:
            self.result = result
            if isinstance(error, BaseException):
                self.exception = error
                self.error = describe_error(error)
            else:
                self.error = error
            self.status = status
            self._done.set()
        for fn in list(self._done_callbacks):
            try:
                fn(self)
            except Exception:
                _log.exception("A done callback of %r failed", self)

    def _capture(
        self, category: type[Warning], text: str, filename: str = "", origin: str | None = None
    ) -> None:
        """A warning raised in the job's thread (the dispatcher calls this; ``origin``: the
        file of the code that raised it)."""
        with self._lock:
            if is_user_warning(category, filename, origin):
                if text not in self.warnings:
                    self.warnings.append(text)
                    self.warning_log.append((getattr(category, "__name__", str(category)), text))
            elif text not in self.library_warnings:
                self.library_warnings.append(text)
