"""The book's quick/full switch (not library API): ADJOINTDEIS_BOOK_MODE=quick (default, CI) or full (committed tables).

Chapters import it from here (their kernels run in notebooks/): ``from book_mode import book_mode``.
"""
import os

MODES = ("quick", "full")


def book_mode() -> str:
    """'quick' (small but real configurations, used by CI) or 'full', from ADJOINTDEIS_BOOK_MODE.

    Raises:
        ValueError: another value of ADJOINTDEIS_BOOK_MODE.
    """
    mode = os.environ.get("ADJOINTDEIS_BOOK_MODE", "quick").strip().lower()
    if mode not in MODES:
        raise ValueError(f"ADJOINTDEIS_BOOK_MODE must be one of {MODES}, got {mode!r}")
    return mode
