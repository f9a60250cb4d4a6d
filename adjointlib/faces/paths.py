"""Where the face data, model weights and caches live.

Source: ``../shared/README.md`` ("code should read these files from ``../shared`` relative to
the project root").

Resolution order everywhere: explicit argument > environment variable > default. Defaults:
the shared data package is ``<repo>/../shared`` when the library runs from a source checkout
(an editable install or ``PYTHONPATH=<repo>``); an installed copy (``pip install .``) has no
repository, so it needs ``$ADJOINTLIB_SHARED`` (or the more specific variables, or an
explicit path) and says so in a one-line FileNotFoundError. Caches go to the user cache folder
(``platformdirs.user_cache_dir("adjointlib")/faces``, e.g. ``~/.cache/adjointlib/faces`` on
Linux) unless ``$ADJOINTLIB_CACHE`` is set. Nothing is hard-coded as an absolute path.
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
    "in_checkout",
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


def _candidate_root() -> Path:
    """The folder two levels above this package (``<repo>`` in a checkout, site-packages when installed)."""
    return Path(__file__).resolve().parents[2]


def in_checkout() -> bool:
    """Whether this ``adjointlib`` runs from a source checkout (and not from an installed copy).

    Source: this project's layout (``<repo>/adjointlib/faces/paths.py`` next to
    ``<repo>/pyproject.toml`` declaring the ``adjointlib`` project).
    Convention: true for an editable install or ``PYTHONPATH=<repo>``; false after
    ``pip install .`` (the package then lives in site-packages).
    Shapes: none (returns a bool).
    """
    pyproject = _candidate_root() / "pyproject.toml"
    try:
        return pyproject.is_file() and 'name = "adjointlib"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return False


def repo_root(hint: str | None = None) -> Path:
    """The repository root: the folder that holds the ``adjointlib`` package.

    Source: this project's layout (``<repo>/adjointlib/faces/paths.py``).
    Convention: resolved from this file's location, so it follows the checkout. Outside a
    checkout (see :func:`in_checkout`) raises a one-line FileNotFoundError ending with
    ``hint`` (what to set instead; the default names ``$ADJOINTLIB_SHARED``).
    Shapes: none (returns a path).
    Raises:
        FileNotFoundError: this adjointlib does not run from a source checkout (the message ends with ``hint``).
    """
    root = _candidate_root()
    if not in_checkout():
        hint = hint or (f"set the environment variable {ENV_SHARED} to the shared data folder "
                        "(see ../shared/README.md) or pass the path explicitly")
        raise FileNotFoundError(f"adjointlib is installed at {Path(__file__).resolve().parents[1]}, not run from "
                                f"a source checkout, so it has no repository root to find defaults in: {hint}.")
    return root


def _resolve(arg: str | Path | None, env: str, default, what: str) -> Path:
    """Pick ``arg`` > ``$env`` > ``default()`` and fail clearly if it does not exist.

    Source: project convention (see module docstring).
    Convention: ``default`` is a callable (evaluated only when needed) built from
    ``$ADJOINTLIB_SHARED`` or ``<repo>/../shared``; raises FileNotFoundError naming the path
    tried and the variables that can be set (outside a checkout without ``$ADJOINTLIB_SHARED``:
    naming the variables to set).
    Shapes: none (returns a path).
    """
    names = env if env == ENV_SHARED else f"{env} (or {ENV_SHARED})"
    if arg is not None:
        path, how = Path(arg).expanduser(), "the argument"
    elif os.environ.get(env):
        path, how = Path(os.environ[env]).expanduser(), f"${env}={os.environ[env]}"
    else:
        path = default(f"set the environment variable {names} or pass the path explicitly")
        how = f"${ENV_SHARED}={os.environ[ENV_SHARED]}" if os.environ.get(ENV_SHARED) else "the default location"
    if not path.exists():
        var = how.split("=")[0]
        fix = (f"{var} is set, so the data is missing under it: put it there, point {var} at the folder that has "
               f"it, or set {env if env != ENV_SHARED else var} to the data's own folder" if how.startswith("$") else
               f"pass the path explicitly or set the environment variable {names}")
        raise FileNotFoundError(f"{what} not found at {path} (from {how}): {fix}; "
                                "`python -m adjointlib.faces.fetch` fetches the public data (README, Get the data).")
    return path


def _shared_default(hint: str | None = None) -> Path:
    """``$ADJOINTLIB_SHARED`` if set, else ``<repo>/../shared`` (existence not checked).

    Source: project convention. Convention: the base of every default data path; outside a
    checkout without ``$ADJOINTLIB_SHARED`` raises FileNotFoundError ending with ``hint``.
    Shapes: none (returns a path).
    """
    env = os.environ.get(ENV_SHARED)
    return Path(env).expanduser() if env else repo_root(hint).parent / "shared"


def shared_dir(path: str | Path | None = None) -> Path:
    """The shared data package folder (``data/``, ``models/``, ``reference/``).

    Source: ``../shared/README.md``.
    Convention: ``path`` > ``$ADJOINTLIB_SHARED`` > ``<repo>/../shared`` (source checkout only).
    Raises FileNotFoundError naming what to set when the folder is missing.
    Shapes: none (returns a path).
    """
    return _resolve(path, ENV_SHARED, _shared_default, "Shared data folder")


def frll_dir(path: str | Path | None = None) -> Path:
    """The FRLL folder with ``neutral_front/``, ``smiling_front/`` and ``london_info.csv``.

    Source: ``../shared/data/frll/README.md``.
    Convention: ``path`` > ``$ADJOINTLIB_FRLL`` > ``<shared>/data/frll``.
    Raises FileNotFoundError naming what to set when the folder is missing.
    Shapes: none (returns a path).
    """
    return _resolve(path, ENV_FRLL, lambda hint: _shared_default(hint) / "data" / "frll", "FRLL folder")


def utkface_zip(path: str | Path | None = None) -> Path:
    """The UTKFace zip of 128x128 chips.

    Source: ``../shared/data/utkface/README.md``.
    Convention: ``path`` > ``$ADJOINTLIB_UTKFACE`` > ``<shared>/data/utkface/utkface_128.zip``.
    Raises FileNotFoundError naming what to set when the file is missing.
    Shapes: none (returns a path).
    """
    return _resolve(path, ENV_UTKFACE, lambda hint: _shared_default(hint) / "data" / "utkface" / "utkface_128.zip",
                    "UTKFace zip")


def model_file(model: str, filename: str) -> Path:
    """A file of a model folder, ``<shared>/models/<model>/<filename>``.

    Source: ``../shared/README.md`` (index of ``models/``).
    Convention: ``<shared>`` = ``$ADJOINTLIB_SHARED`` or ``<repo>/../shared``; raises
    FileNotFoundError if the file is missing (or, outside a checkout, if ``$ADJOINTLIB_SHARED``
    is not set).
    Shapes: none (returns a path).
    Raises:
        FileNotFoundError: ``<shared>/models/<model>/<filename>`` is missing, or (outside a checkout)
            ``$ADJOINTLIB_SHARED`` is not set.
    """
    hint = f"pass the weights path explicitly or set the environment variable {ENV_SHARED}"
    path = _shared_default(hint) / "models" / model / filename
    if not path.is_file():
        source = f"${ENV_SHARED}={os.environ[ENV_SHARED]}" if os.environ.get(ENV_SHARED) else "the default location"
        fix = ("the variable is set, so the file is missing in that folder" if os.environ.get(ENV_SHARED)
               else f"pass the weights path explicitly or set the environment variable {ENV_SHARED}")
        raise FileNotFoundError(f"model file {path} not found (from {source}): {fix}; "
                                "`python -m adjointlib.faces.fetch` fetches the public weights (README, Get the data).")
    return path


def cache_dir(path: str | Path | None = None) -> Path:
    """The cache folder for aligned arrays and baseline morphs (created if missing).

    Source: project convention; ``platformdirs`` for the per-user cache location.
    Convention: ``path`` > ``$ADJOINTLIB_CACHE`` > ``platformdirs.user_cache_dir("adjointlib")/faces``
    (``~/.cache/adjointlib/faces`` on Linux, ``~/Library/Caches/adjointlib/faces`` on macOS,
    ``%LOCALAPPDATA%\\adjointlib\\Cache\\faces`` on Windows), the same whether or not the library
    runs from a checkout.
    Shapes: none (returns a path).
    Raises:
        ImportError: ``path`` is None, ``$ADJOINTLIB_CACHE`` is not set and ``platformdirs`` (the ``faces`` extra)
            is missing; the message names ``$ADJOINTLIB_CACHE``.
    """
    if path is not None:
        out = Path(path).expanduser()
    elif os.environ.get(ENV_CACHE):
        out = Path(os.environ[ENV_CACHE]).expanduser()
    else:
        try:
            import platformdirs
        except ImportError as error:
            raise ImportError(f"the default cache folder needs platformdirs (pip install 'adjointlib[faces]'); "
                              f"or set the environment variable {ENV_CACHE} to a folder") from error
        out = Path(platformdirs.user_cache_dir("adjointlib", appauthor=False)) / "faces"
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_frozen_weights(net, path: Path, what: str):
    """Load a state_dict strictly into ``net`` and freeze it (eval mode, no parameter gradients).

    Source: the model folders' READMEs ("load with map_location='cpu'", strict load).
    Convention: gradients still flow to the network's input.  Returns ``net``.
    Raises:
        FileNotFoundError: no file at ``path`` (the message names ``what`` and the path).
        RuntimeError: the state dict does not match ``net`` (strict load).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path}")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    net.eval()
    net.requires_grad_(False)
    return net
