"""Execute notebooks in place so that their committed outputs come from a real run.

Usage: python tools/execute_notebooks.py notebooks/00_quickstart.ipynb [...]
The book's quick configuration is used unless ADJOINTDEIS_BOOK_MODE=full is set; progress bars
are silenced (TQDM_DISABLE=1) so outputs match what nbval sees in CI.
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    os.environ.setdefault("TQDM_DISABLE", "1")
    NotebookClient(notebook, timeout=3600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, tmp)
    tmp.replace(path)  # atomic: a failed run never leaves a half-written notebook
    print(f"executed {path}")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        execute(Path(name))
