"""Execute notebooks in place so that their committed outputs come from a real run.

Usage: python tools/execute_notebooks.py notebooks/00_quickstart.ipynb [...]
The book's quick configuration is used unless ADJOINTDEIS_BOOK_MODE=full is set; progress bars
are silenced (TQDM_DISABLE=1) so outputs match what nbval sees in CI. The repository root is put on
the kernels' PYTHONPATH (as the root conftest.py does for nbval): the notebooks import ``derivations``,
which is not installed.
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adjointlib.atomic import atomic_path  # noqa: E402


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    os.environ.setdefault("TQDM_DISABLE", "1")
    if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    NotebookClient(notebook, timeout=3600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    with atomic_path(path) as tmp:  # a failed run never leaves a half-written notebook
        nbformat.write(notebook, tmp)
    print(f"executed {path}")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        execute(Path(name))
