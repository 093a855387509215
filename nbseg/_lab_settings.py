"""JupyterLab defaults nbseg installs into an environment (``python -m nbseg._lab_settings``).

``saveState``: save widget state with the notebook, so a saved notebook reopened shows the last
training graph and the feedback image snapshot instead of blank widgets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OVERRIDES = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}


def install(prefix: str | None = None) -> Path:
    path = Path(prefix or sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    for plugin, values in OVERRIDES.items():
        current.setdefault(plugin, {}).update(values)
    path.write_text(json.dumps(current, indent=2))
    return path


if __name__ == "__main__":
    print(install())
