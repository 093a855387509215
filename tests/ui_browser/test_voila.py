"""The quickstart as a Voilà app (no code cells shown): the tool renders and trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import ROOT, _free_port, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    pytest.importorskip("voila")
    base = tmp_path_factory.mktemp("voila")
    root = base / "root"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns("*.nbseg", "*.zarr"))
    for d in ("config", "runtime"):
        (base / d).mkdir()
    port = _free_port()
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        NBSEG_SMALL="1",
        NBSEG_MODELS=str(base / "models"),
        PYTHONWARNINGS="ignore",
    )
    log = open(base / "voila.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "01_quickstart.ipynb", "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1", "--token=", "--show_tracebacks=True"],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:  # poll until the server answers
        try:
            urllib.request.urlopen(url + "voila/static/", timeout=2)
        except urllib.error.HTTPError:
            break  # the server is up (404 for the folder is fine)
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((base / "voila.log").read_text()) from None
            time.sleep(0.3)
        else:
            break
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


def test_quickstart_renders_and_trains_in_voila(voila_url, page):
    page.goto(voila_url)
    tool = page.locator(".nbseg-tool").first
    tool.wait_for(timeout=600_000)  # Voilà runs the whole notebook before showing it
    # the notebook's own training ran: the graph holds its points, the snapshot its image
    page.wait_for_function(
        "() => document.querySelectorAll('.nbseg-graph g.curve path.dot').length >= 4"
    )
    assert "DeepLearningTool(" not in page.inner_text("body"), "Voilà must not show code"
    errors = page.locator("[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    assert not [e for e in errors if "Traceback" in e]
    screenshot(tool, "voila_quickstart")
