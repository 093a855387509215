"""Real-browser fixtures: a headless JupyterLab on localhost and Debian's Chromium driven by
Playwright (``executable_path``; Playwright's own browser download is not used).

JupyterLab runs with isolated config/runtime/workspace dirs, a random token and
``expose_app_in_browser`` (so tests can run Lab commands); the notebooks are copied to a scratch
root dir. Screenshots land in ``test-artifacts/screenshots/``. Synchronisation is by waiting on
DOM states and kernel replies, never on sleeps.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"


#: true once the current notebook's kernel is connected and idle (Run All before that runs
#: nothing)
KERNEL_IDLE_JS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


def _browser() -> str | None:
    for cand in (os.environ.get("NBSEG_BROWSER"), "/usr/bin/chromium", shutil.which("chromium")):
        if cand and Path(cand).exists():
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _browser()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                "Chromium is missing: scripts/test.sh installs it (apt-get install chromium)"
            )
        pytest.skip("Chromium not installed (bash scripts/setup.sh --browser installs it)")
    return path


class Lab:
    def __init__(self, url: str, token: str, root: Path, runtime: Path, proc: subprocess.Popen):
        self.url, self.token, self.root, self.runtime, self.proc = url, token, root, runtime, proc

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"

    def kernel_client(self, timeout: float = 120):
        """A client of the (single) running kernel, via its connection file."""
        from jupyter_client import BlockingKernelClient

        deadline = time.monotonic() + timeout
        while True:
            files = sorted(self.runtime.glob("kernel-*.json"), key=lambda p: p.stat().st_mtime)
            if files and _complete_json(files[-1]):  # the server may still be writing it
                break
            if time.monotonic() > deadline:
                raise TimeoutError("no kernel started")
            time.sleep(0.2)
        kc = BlockingKernelClient()
        kc.load_connection_file(str(files[-1]))
        kc.start_channels()
        kc.wait_for_ready(timeout=timeout)
        return kc


def _complete_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def run_in_kernel(kc, code: str, timeout: float = 60) -> str:
    """Execute ``code`` in the notebook's kernel; return its stdout (raises on error)."""
    out: list[str] = []
    errors: list[str] = []

    def hook(msg):
        kind = msg["header"]["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    if errors or reply["content"]["status"] != "ok":
        raise RuntimeError(f"kernel error running {code!r}: {''.join(errors)}")
    return "".join(out)


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    shutil.copytree(
        ROOT / "notebooks", root, ignore=shutil.ignore_patterns("*.nbseg", "*.zarr", ".ipynb_*")
    )
    dirs = {k: base / k for k in ("config", "runtime", "data", "workspaces", "settings", "ipython")}
    for d in dirs.values():
        d.mkdir()
    # no "would you like news?" toast over the screenshots
    news = dirs["settings"] / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    token = secrets.token_hex(16)
    port = _free_port()
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        IPYTHONDIR=str(dirs["ipython"]),
        NBSEG_SMALL="1",
        NBSEG_MODELS=str(base / "models"),
        PYTHONWARNINGS="ignore",
    )
    cmd = [
        sys.executable, "-m", "jupyter", "lab",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        "--allow-root",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={dirs['workspaces']}",
        f"--LabApp.user_settings_dir={dirs['settings']}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    log = open(base / "lab.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                json.loads(r.read())
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    "JupyterLab did not start:\n" + (base / "lab.log").read_text()
                ) from None
            time.sleep(0.3)
    yield Lab(url, token, root, dirs["runtime"], proc)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()


def screenshot(locator, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    locator.screenshot(path=str(path))
    return path
