"""Nothing lost: saves are atomic under SIGKILL, killed saves leave no temp files behind, the
trash is bounded, exports refuse to overwrite unasked (issue 17)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nbseg
from nbseg._files import clean_stale_temps
from nbseg.cli import main
from nbseg.errors import InputError, ModelFileError
from nbseg.store.export import export_torchscript
from nbseg.store.library import TRASH_KEEP, TRASH_MAX_BYTES, ModelLibrary

KILLS = 20


def tiny(description: str, seed: int) -> nbseg.Model:
    spec = nbseg.ModelSpec(
        architecture="unet",
        class_count=2,
        parameters={"filters": 4, "depth": 2},
        name="m",
        description=description,
    )
    return nbseg.generate_model(spec, seed=seed)


def first_weight(model: nbseg.Model) -> torch.Tensor:
    return next(iter(model.network.state_dict().values()))


def which(model: nbseg.Model, old: nbseg.Model, new: nbseg.Model) -> str:
    """'old' or 'new' (the description and a weight tensor must both agree)."""
    for tag, ref in (("old", old), ("new", new)):
        if model.spec.description == tag:
            assert torch.equal(first_weight(model), first_weight(ref)), tag
            return tag
    raise AssertionError(f"neither old nor new: {model.spec.description!r}")


def temps(*folders: Path) -> list[str]:
    return sorted(p.name for f in folders if f.is_dir() for p in f.iterdir() if p.suffix == ".tmp")


# -- the kill test -----------------------------------------------------------------------------
# One worker process (``sys.executable -c``) imports nbseg once, then forks one child per save;
# the test kills the child with SIGKILL after a random delay covering the save's duration.
WORKER = r"""
import os, sys, time
import nbseg
from nbseg.store.library import ModelLibrary

def out(text):
    os.write(1, (text + "\n").encode())

def line():  # a command; skips the start bytes a child killed early did not read
    buf = b""
    while not buf.endswith(b"\n"):
        ch = os.read(0, 1)
        if not ch:
            os._exit(0)
        if ch != b"S" or buf:
            buf += ch
    return buf.decode().strip()

work = sys.argv[1]
new = nbseg.load_model(os.path.join(work, "new.nbseg"))
cal = os.path.join(work, "warm-up")  # the first saves import and allocate what saving needs
for _ in range(2):
    new.save(os.path.join(cal, "m.nbseg"))
    ModelLibrary(os.path.join(cal, "lib")).save(new, "m", overwrite=True)
out("ready")
while True:
    mode, target = line().split(" ", 1)
    pid = os.fork()
    if pid == 0:
        try:
            out(f"child {os.getpid()}")
            os.read(0, 1)  # the start byte "S"
            out("began")
            if mode == "model":
                new.save(target)
            else:
                ModelLibrary(target).save(new, "m", overwrite=True)
            out("saved")
            time.sleep(120)  # until killed
        finally:
            os._exit(0)
    os.waitpid(pid, 0)  # reaped: the killed writer is gone
    out("reaped")
"""


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    work = tmp_path_factory.mktemp("kill")
    old, new = tiny("old", seed=0), tiny("new", seed=1)
    new.save(work / "new.nbseg")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    log = open(work / "worker.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(work)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        bufsize=0,
    )
    proc.log = work / "worker.log"
    first = proc.stdout.readline().decode().split()
    assert first and first[0] == "ready", proc.log.read_text()[-3000:]
    yield proc, work, old, new
    proc.stdin.close()
    proc.wait(timeout=30)
    log.close()


def _child_save(worker, mode: str, target: Path, delay: float | None) -> tuple[bool, bool, float]:
    """One save (``mode``: "model" or "library") in a forked child, SIGKILLed ``delay``
    seconds after it began (``None``: once it has finished). Returns (the save had finished
    when killed, a temp file was left, seconds from its start to "saved" when finished)."""
    proc = worker[0]
    proc.stdin.write(f"{mode} {target}\n".encode())
    got = proc.stdout.readline().decode().split()
    assert got and got[0] == "child", (got, proc.log.read_text()[-3000:])
    pid = int(got[1])
    proc.stdin.write(b"S")
    assert proc.stdout.readline().strip() == b"began"  # the save starts now
    t0 = time.perf_counter()
    elapsed = 0.0
    finished = False
    if delay is None:
        assert proc.stdout.readline().strip() == b"saved"
        elapsed, finished = time.perf_counter() - t0, True
    else:
        time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    while True:
        msg = proc.stdout.readline().decode().strip()
        assert msg, proc.log.read_text()[-3000:]
        if msg == "saved":
            finished = True
        elif msg == "reaped":
            break
    folder = target.parent if mode == "model" else target
    left = bool(temps(folder, folder / ".trash"))
    return finished, left, elapsed


def _kill_runs(worker, mode: str, target: Path, check, reset) -> str:
    """``KILLS`` saves killed at random moments over the save's duration (measured first on
    unkilled children); ``check()`` returns "old"/"new" after each, ``reset()`` is the next
    save. Returns the figures."""
    seed = int(os.environ.get("NBSEG_KILL_SEED", time.time_ns() % 100_000))
    rng = random.Random(f"{seed}-{mode}")
    durations = []
    for _ in range(3):
        durations.append(_child_save(worker, mode, target, None)[2])
        reset()
    span = 1.2 * sorted(durations)[1]
    outcome = {"old": 0, "new": 0}
    finished = left = 0
    for _ in range(KILLS):
        done, temp, _ = _child_save(worker, mode, target, rng.uniform(0.0, span))
        finished += done
        left += temp
        outcome[check()] += 1  # old or new, never neither
        reset()  # the next save into the folder ...
        folder = target.parent if mode == "model" else target
        assert temps(folder, folder / ".trash") == []  # ... removes what the killed one left
    assert outcome["old"] + outcome["new"] == KILLS
    assert finished < KILLS  # some kills landed inside the save
    return (
        f"{KILLS} SIGKILLs (seed {seed}, delays 0-{span * 1e3:.1f} ms, save "
        f"{sorted(durations)[1] * 1e3:.1f} ms): {outcome['old']} old, {outcome['new']} new, "
        f"{KILLS - finished} during the save, {left} left a temp file, 0 temp files after the "
        "next save"
    )


def test_sigkill_during_model_save_leaves_old_or_new(worker, tmp_path):
    _, _, old, new = worker
    path = tmp_path / "m.nbseg"
    old.save(path)
    figures = _kill_runs(
        worker,
        "model",
        path,
        check=lambda: which(nbseg.load_model(path), old, new),
        reset=lambda: old.save(path),
    )
    print(f"\nModel.save: {figures}")


def test_sigkill_during_library_overwrite_leaves_old_or_new(worker, tmp_path):
    _, _, old, new = worker
    root = tmp_path / "lib"
    ModelLibrary(root).save(old, "m")

    def check() -> str:
        lib = ModelLibrary(root)  # opening the library removes stale temp files
        assert temps(root, root / ".trash") == []
        assert lib.names() == ["m"]  # the name never goes missing
        return which(lib.load("m"), old, new)

    figures = _kill_runs(
        worker,
        "library",
        root,
        check=check,
        reset=lambda: ModelLibrary(root).save(old, "m", overwrite=True),
    )
    trash = ModelLibrary(root).trash()
    assert 1 <= len(trash) <= TRASH_KEEP  # bounded
    for row in trash:  # every trashed version is a whole model
        which(nbseg.load_model(row.path), old, new)
    print(f"\nModelLibrary.save(overwrite=True): {figures}; trash {len(trash)} versions")


# -- atomic overwrite, temp cleanup, trash bound ---------------------------------------------
def test_overwrite_keeps_the_old_file_in_place_until_the_new_one_replaces_it(tmp_path, monkeypatch):
    lib = ModelLibrary(tmp_path)
    old, new = tiny("old", 0), tiny("new", 1)
    lib.save(old, "m")
    import nbseg._files as files

    def crash(*a, **k):  # the process dies just before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        lib.save(new, "m", overwrite=True)
    monkeypatch.undo()
    assert lib.load("m").spec.description == "old"  # not moved away first
    assert [r.name for r in lib.trash()] == ["m"]  # and a copy is in the trash
    assert temps(tmp_path, tmp_path / ".trash") == []
    lib.save(new, "m", overwrite=True)
    assert lib.load("m").spec.description == "new"
    assert [nbseg.load_model(r.path).spec.description for r in lib.trash()] == ["old", "old"]


def _fake_temp(folder: Path, target: str, pid: int, age_s: float = 0.0) -> Path:
    from nbseg._files import _HOST

    p = folder / f".{target}.{pid}@{_HOST}.abcd1234.tmp"
    p.write_bytes(b"half a model")
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_removed_on_next_save_and_library_open(tmp_path):
    dead = _fake_temp(tmp_path, "a.nbseg", _dead_pid())
    old = _fake_temp(tmp_path, "b.nbseg", os.getppid(), age_s=120)  # live writer, but old
    legacy = tmp_path / ".c.nbseg.k2j4h6g8.tmp"  # an older nbseg's name: age only
    legacy.write_bytes(b"x")
    t = time.time() - 120
    os.utime(legacy, (t, t))
    live = _fake_temp(tmp_path, "d.nbseg", os.getppid())  # a save in progress: kept
    other = tmp_path / ".notes.txt.tmp"  # not ours
    other.write_bytes(b"x")
    tiny("x", 0).save(tmp_path / "x.nbseg")
    assert not dead.exists() and not old.exists() and not legacy.exists()
    assert live.exists() and other.exists()
    (tmp_path / ".trash").mkdir()
    dead2 = _fake_temp(tmp_path / ".trash", "x@1.nbseg", _dead_pid())
    ModelLibrary(tmp_path)
    assert not dead2.exists() and live.exists()
    assert clean_stale_temps(tmp_path, ".nbseg", max_age_s=0) == [live]


def test_trash_is_bounded_by_count_and_size(tmp_path):
    assert TRASH_KEEP == 20 and TRASH_MAX_BYTES == 1 << 30
    lib = ModelLibrary(tmp_path)
    lib.save(tiny("v0", 0), "m")
    for i in range(1, 26):
        lib.save(tiny(f"v{i}", i), "m", overwrite=True)
    rows = lib.trash()
    assert len(rows) == TRASH_KEEP  # 25 overwrites, the newest 20 kept
    assert [nbseg.load_model(r.path).spec.description for r in rows[:2]] == ["v24", "v23"]
    size = (tmp_path / "m.nbseg").stat().st_size
    small = ModelLibrary(tmp_path, trash_keep=5, trash_max_bytes=int(2.5 * size))
    small.save(tiny("w", 0), "m", overwrite=True)
    assert len(small.trash()) == 2  # the size bound: 2 files fit
    tiny_bound = ModelLibrary(tmp_path, trash_max_bytes=1)
    tiny_bound.delete("m")
    assert len(tiny_bound.trash()) == 1  # the newest is always kept (a delete is undoable)
    assert "newest 20 versions and at most 1.0 GiB" in ModelLibrary(tmp_path).trash_policy


def test_models_trash_command_says_what_it_keeps(tmp_path, capsys):
    assert main(["models", "--root", str(tmp_path), "trash"]) == 0
    assert "keeps the newest 20 versions" in capsys.readouterr().out


def test_library_name_with_a_newline_is_refused(tmp_path):
    lib = ModelLibrary(tmp_path)
    with pytest.raises(InputError, match=r"'model\\n'.*control character"):
        lib.save(tiny("x", 0), "model\n")
    with pytest.raises(ModelFileError, match="Invalid model name"):  # still a ModelFileError
        lib.save(tiny("x", 0), "model ")
    assert list(tmp_path.iterdir()) == []


# -- exports refuse to overwrite ---------------------------------------------------------------
def test_exports_refuse_to_overwrite_unless_asked(tmp_path, capsys):
    m = tiny("x", 0)
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match=r"m\.pt.*already exists.*overwrite=True"):
        export_torchscript(m, out)
    assert out.read_bytes() == b"precious"
    export_torchscript(m, out, overwrite=True)
    assert out.read_bytes() != b"precious"
    lib = ModelLibrary(tmp_path / "lib")
    lib.save(m, "m")
    target = tmp_path / "copy.nbseg"
    target.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists"):
        lib.export("m", target)
    assert target.read_bytes() == b"precious"
    # the command line: one line naming the path and the flag, nothing written
    model_file = str(m.save(tmp_path / "m.nbseg"))
    capsys.readouterr()
    for argv in (
        ["export", model_file, "--format", "torchscript", str(out)],
        ["models", "--root", str(tmp_path / "lib"), "export", "m", str(target)],
    ):
        before = Path(argv[-1]).read_bytes()
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("nbseg: error:"), err
        assert argv[-1] in err[0] and "--overwrite" in err[0]
        assert Path(argv[-1]).read_bytes() == before
        assert main([*argv, "--overwrite"]) == 0
    assert nbseg.load_model(target).spec.name == "m"
