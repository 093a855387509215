"""BackgroundJob (thread, stop, state, errors, warnings per job) and SegmentationRun."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

import nbseg
from nbseg.errors import InputError, NbsegError
from nbseg.jobs import BackgroundJob, Cancelled, is_user_warning
from nbseg.progress import Progress

from .helpers import blobs, ready_model


class _Loop(BackgroundJob):
    """Works until stopped (checking its stop event), then returns how often it looped."""

    kind = "loop"

    def __init__(self, warn: tuple[tuple[str, type[Warning]], ...] = ()) -> None:
        super().__init__()
        self.to_warn = warn
        self.started = threading.Event()
        self.loops = 0

    def _run(self) -> int:
        for text, category in self.to_warn:
            warnings.warn(text, category, stacklevel=1)
        self.started.set()
        while not self.stop_event.wait(0.005):
            self.loops += 1
            self._set_progress({"loops": self.loops})
        return self.loops


class _Fails(BackgroundJob):
    def __init__(self, err: BaseException) -> None:
        super().__init__()
        self.err = err

    def _run(self) -> None:
        raise self.err


def test_start_returns_at_once_and_stop_ends_within_a_bounded_time():
    job = _Loop()
    assert job.status == "idle" and not job.running and job.wait(0) is None
    t0 = time.perf_counter()
    assert job.start() is job
    assert time.perf_counter() - t0 < 0.5 and job.running and job.status == "running"
    assert job.started.wait(5)
    with pytest.raises(NbsegError, match="already running"):
        job.start()
    while job.progress is None:
        time.sleep(0.005)
    job.stop()
    assert job.status in ("stopping", "stopped")
    t_stop = time.perf_counter()
    result = job.wait(5)
    assert time.perf_counter() - t_stop < 1.0
    assert not job.running and job.status == "stopped" and job.error is None
    assert result == job.result == job.loops and job.progress == {"loops": job.loops}
    assert job._thread.name == "nbseg-loop"
    job._thread.join(2)
    assert not job._thread.is_alive()


def test_errors_are_captured_never_raised():
    job = _Fails(InputError("bad input: fix it")).start()
    assert job.wait(5) is None
    assert job.status == "failed" and job.error == "bad input: fix it"
    assert isinstance(job.exception, InputError)
    job = _Fails(ZeroDivisionError("division by zero")).start()
    job.wait(5)
    assert job.status == "failed" and job.error == "ZeroDivisionError: division by zero"
    # Cancelled from the work is a stop, not a failure
    job = _Fails(Cancelled("stopped")).start()
    job.wait(5)
    assert job.status == "stopped" and job.error is None


def test_done_callbacks_run_after_the_final_state():
    seen = []
    job = _Fails(ValueError("x"))
    job.add_done_callback(lambda j: seen.append((j.status, j.running, threading.current_thread())))
    job.add_done_callback(lambda j: 1 / 0)  # logged, does not break the job
    job.start().wait(5)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen and seen[0][:2] == ("failed", False)
    assert seen[0][2].name == "nbseg-job"


def test_warnings_are_captured_per_job_and_not_leaked():
    a = _Loop(
        warn=(
            ("job a: check the patch size", UserWarning),
            ("job a: check the patch size", UserWarning),  # deduplicated
            ("job a: memory ratio 1.3", ResourceWarning),
            ("job a: some library's internals", FutureWarning),
        )
    )
    b = _Loop(warn=(("job b: overflow", RuntimeWarning),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a.start(), b.start()
        assert a.started.wait(5) and b.started.wait(5)
        warnings.warn("main thread warning", UserWarning, stacklevel=1)
        other = threading.Thread(
            target=lambda: warnings.warn("plain thread warning", UserWarning, stacklevel=1)
        )
        other.start()
        other.join()
        a.stop(), b.stop()
        a.wait(5), b.wait(5)
    assert a.warnings == ["job a: check the patch size", "job a: memory ratio 1.3"]
    assert a.warning_log == [
        ("UserWarning", "job a: check the patch size"),
        ("ResourceWarning", "job a: memory ratio 1.3"),
    ]
    assert a.library_warnings == ["job a: some library's internals"]
    assert b.warnings == ["job b: overflow"] and b.library_warnings == []
    # nothing of the jobs reached the process's handler; other threads' warnings did
    assert sorted(str(w.message) for w in caught) == ["main thread warning", "plain thread warning"]


def test_user_warning_rule():
    assert is_user_warning(UserWarning) and is_user_warning(ResourceWarning)
    assert is_user_warning(RuntimeWarning)
    assert not is_user_warning(FutureWarning, "/site-packages/lightning/x.py")
    assert not is_user_warning(DeprecationWarning, "/site-packages/torch/x.py")
    assert is_user_warning(FutureWarning, nbseg.jobs.__file__)  # raised by nbseg itself


@pytest.fixture(scope="module")
def volume():
    image, _, _ = blobs((4, 40, 48))
    return image


def test_segmentation_run_equals_segment(volume):
    model = ready_model()
    seen = []
    run = nbseg.SegmentationRun(model, volume, progress=lambda *a: seen.append(a), tta=False)
    assert run.start() is run
    result = run.wait(120)
    assert run.status == "completed" and run.error is None, run.error
    np.testing.assert_array_equal(result.values, nbseg.segment(model, volume).values)
    assert result.dims == volume.dims and result.shape == volume.shape
    assert seen and isinstance(run.progress, Progress)
    assert run.progress.done == run.progress.total > 1


def test_segmentation_run_stops_between_batches(volume):
    model = ready_model()
    holder = {}

    def stop_on_first(*args):
        holder.setdefault("calls", []).append(args)
        holder["run"].stop()

    run = nbseg.SegmentationRun(model, volume, progress=stop_on_first, batch_size=1)
    holder["run"] = run
    t0 = time.perf_counter()
    run.start()
    assert run.wait(60) is None and time.perf_counter() - t0 < 60
    assert run.status == "stopped" and run.result is None and run.error is None
    assert len(holder["calls"]) == 1  # no batch after the one that saw the stop
    assert run.progress.done == 1 < run.progress.total


def test_segmentation_run_reports_segment_errors(volume):
    run = nbseg.SegmentationRun(ready_model(), volume, mask=volume.isel(x=slice(0, 5)) > 0)
    run.start().wait(60)
    assert run.status == "failed" and "mask has shape" in run.error
    with pytest.raises(InputError, match="stop_event"):
        nbseg.SegmentationRun(ready_model(), volume, stop_event=threading.Event())


def test_a_library_deprecation_attributed_to_nbseg_code_is_not_a_user_warning(tmp_path):
    """A library's FutureWarning with a stacklevel pointing at its nbseg caller was listed as
    a user warning in the Train tab: the code that called warnings.warn decides."""
    import importlib.util
    from pathlib import Path

    lib = tmp_path / "some_library.py"
    lib.write_text(
        "import warnings\n"
        "def old_api():\n"
        "    warnings.warn('old_api is deprecated', FutureWarning, stacklevel=2)\n"
        "def odd_call():\n"
        "    warnings.warn('odd call', DeprecationWarning, stacklevel=3)\n"
    )
    spec = importlib.util.spec_from_file_location("some_library", lib)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # code "in nbseg" (its frames are attributed to a file of the nbseg package)
    nbseg_file = str(Path(nbseg.jobs.__file__).with_name("_caller_for_tests.py"))
    scope = {"lib": module, "warnings": warnings}
    exec(
        compile(
            "def call_library():\n"
            "    lib.old_api()\n"
            "def call_twice():\n"
            "    lib.odd_call()\n"
            "def own_warning():\n"
            "    warnings.warn('nbseg: this option will change', FutureWarning, stacklevel=1)\n",
            nbseg_file,
            "exec",
        ),
        scope,
    )

    class _Warns(BackgroundJob):
        def _run(self) -> None:
            scope["call_library"]()
            scope["call_twice"]()
            scope["own_warning"]()

    job = _Warns()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        job.start().wait(10)
    assert job.status == "completed"
    assert job.warnings == ["nbseg: this option will change"]
    assert job.library_warnings == ["old_api is deprecated", "odd call"]
    assert is_user_warning(FutureWarning, nbseg_file, origin=str(lib)) is False
    assert is_user_warning(FutureWarning, nbseg_file, origin=nbseg_file) is True


def test_a_training_lists_no_library_future_or_deprecation_warning():
    model = ready_model()
    image, labels, _ = blobs((2, 32, 32), labelled=(0, 1))
    params = nbseg.TrainingParams(patch_size=32, batch_size=2, epochs=1)
    run = nbseg.TrainingRun(model, nbseg.TrainingSet(image, labels), params, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as a notebook shows FutureWarnings
        warnings.simplefilter("always", DeprecationWarning)
        run.start().wait(120)
    assert run.status == "completed", run.error
    shown = [c for c, _ in run.warning_log]
    assert "FutureWarning" not in shown and "DeprecationWarning" not in shown, run.warning_log
    assert not any("deprecated" in w for w in run.warnings), run.warnings
