"""Root pytest configuration: the repository root on the import path of the notebook kernels.

``derivations/`` is not part of the installed ``adjointlib`` distribution: pytest imports it from the
repository root (``pythonpath = ["."]`` in pyproject.toml). The notebooks import it too, and nbval runs
them in Jupyter kernels started in ``notebooks/``; the kernels inherit this process's environment, so
the root is prepended to ``PYTHONPATH`` here, before any kernel starts.
"""
import os
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent)
if ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
