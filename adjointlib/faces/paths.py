"""Where the face data, model weights and caches live.

Source: ``../shared/README.md`` ("code should read these files from ``../shared`` relative to
the project root").

Resolution order everywhere: explicit argument > environment variable > default relative to
the repository root (``<repo>/../shared``, ``<repo>/cache``). Nothing is hard-coded as an
absolute path.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "load_frozen_weights",
    "ENV_SHARED",
    "ENV_FRLL",
    "ENV_UTKFACE",
    "ENV_CACHE",
    "repo_root",
    "shared_dir",
    "frll_dir",
    "utkface_zip",
    "model_file",
    "cache_dir",
]

#: Environment variable naming the shared data folder (the one holding ``data/`` and ``models/``).
ENV_SHARED = "ADJOINTLIB_SHARED"
#: Environment variable naming the FRLL folder (holding ``neutral_front/``, ``smiling_front/``).
ENV_FRLL = "ADJOINTLIB_FRLL"
#: Environment variable naming the UTKFace zip file (``utkface_128.zip``).
ENV_UTKFACE = "ADJOINTLIB_UTKFACE"
#: Environment variable naming the cache folder for aligned arrays and embeddings.
ENV_CACHE = "ADJOINTLIB_CACHE"


def repo_root() -> Path:
    """The repository root: the folder that holds the ``adjointlib`` package.

    Source: this project's layout (``<repo>/adjointlib/faces/paths.py``).
    Convention: resolved from this file's location, so it follows the checkout.
    Shapes: none (returns a path).
    """
    return Path(__file__).resolve().parents[2]


def _resolve(arg: str | Path | None, env: str, default: Path, what: str) -> Path:
    """Pick ``arg`` > ``$env`` > ``default`` and fail clearly if it does not exist.

    Source: project convention (see module docstring).
    Convention: the default is built from ``$ADJOINTLIB_SHARED`` or ``<repo>/../shared``;
    raises FileNotFoundError naming the path tried and the variables that can be set.
    Shapes: none (returns a path).
    """
    if arg is not None:
        path, how = Path(arg).expanduser(), "the argument"
    elif os.environ.get(env):
        path, how = Path(os.environ[env]).expanduser(), f"${env}"
    else:
        path, how = default, "the default location"
    if not path.exists():
        names = env if env == ENV_SHARED else f"{env} (or {ENV_SHARED})"
        raise FileNotFoundError(
            f"{what} not found at {path} (from {how}). Pass the path explicitly or set the "
            f"environment variable {names}; see ../shared/README.md for the data package."
        )
    return path


def _shared_default() -> Path:
    """``$ADJOINTLIB_SHARED`` if set, else ``<repo>/../shared`` (existence not checked).

    Source: project convention. Convention: the base of every default data path.
    Shapes: none (returns a path).
    """
    env = os.environ.get(ENV_SHARED)
    return Path(env).expanduser() if env else repo_root().parent / "shared"


def shared_dir(path: str | Path | None = None) -> Path:
    """The shared data package folder (``data/``, ``models/``, ``reference/``).

    Source: ``../shared/README.md``.
    Convention: ``path`` > ``$ADJOINTLIB_SHARED`` > ``<repo>/../shared``.
    Shapes: none (returns a path).
    """
    return _resolve(path, ENV_SHARED, _shared_default(), "Shared data folder")


def frll_dir(path: str | Path | None = None) -> Path:
    """The FRLL folder with ``neutral_front/``, ``smiling_front/`` and ``london_info.csv``.

    Source: ``../shared/data/frll/README.md``.
    Convention: ``path`` > ``$ADJOINTLIB_FRLL`` > ``<shared>/data/frll``.
    Shapes: none (returns a path).
    """
    return _resolve(path, ENV_FRLL, _shared_default() / "data" / "frll", "FRLL folder")


def utkface_zip(path: str | Path | None = None) -> Path:
    """The UTKFace zip of 128x128 chips.

    Source: ``../shared/data/utkface/README.md``.
    Convention: ``path`` > ``$ADJOINTLIB_UTKFACE`` > ``<shared>/data/utkface/utkface_128.zip``.
    Shapes: none (returns a path).
    """
    default = _shared_default() / "data" / "utkface" / "utkface_128.zip"
    return _resolve(path, ENV_UTKFACE, default, "UTKFace zip")


def model_file(model: str, filename: str) -> Path:
    """A file of a model folder, ``<shared>/models/<model>/<filename>``.

    Source: ``../shared/README.md`` (index of ``models/``).
    Convention: ``<shared>`` = ``$ADJOINTLIB_SHARED`` or ``<repo>/../shared``; raises
    FileNotFoundError if the file is missing.
    Shapes: none (returns a path).
    """
    path = _shared_default() / "models" / model / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"Model file {path} not found. Pass the weights path explicitly or set the "
            f"environment variable {ENV_SHARED}; see ../shared/README.md for the data package."
        )
    return path


def cache_dir(path: str | Path | None = None) -> Path:
    """The cache folder for aligned arrays (created if missing, git-ignored).

    Source: project convention (``cache/`` is in ``.gitignore``).
    Convention: ``path`` > ``$ADJOINTLIB_CACHE`` > ``<repo>/cache/faces``.
    Shapes: none (returns a path).
    """
    if path is not None:
        out = Path(path).expanduser()
    elif os.environ.get(ENV_CACHE):
        out = Path(os.environ[ENV_CACHE]).expanduser()
    else:
        out = repo_root() / "cache" / "faces"
    out.mkdir(parents=True, exist_ok=True)
    return out



def load_frozen_weights(net, path: Path, what: str):
    """Load a state_dict strictly into ``net`` and freeze it (eval mode, no parameter gradients).

    Source: the model folders' READMEs ("load with map_location='cpu'", strict load).
    Convention: gradients still flow to the network's input.  Raises FileNotFoundError naming
    ``what`` and the path when the file is missing.  Returns ``net``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path}")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    net.eval()
    net.requires_grad_(False)
    return net
