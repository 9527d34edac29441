"""Progress bars of the long-running commands: tqdm on stderr, shown only when stderr is a terminal and
``--quiet`` was not given (logs and CI output stay clean).

:func:`set_quiet` is what ``--quiet`` calls; ``MMV_TORCH_QUIET=1`` does the same for library use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar of this process off (``True``) or back to the terminal rule."""
    global _QUIET
    _QUIET = bool(quiet)


def enabled(requested: bool = True) -> bool:
    """Whether a bar is shown: ``requested``, not quiet (:func:`set_quiet`, ``MMV_TORCH_QUIET``), stderr a TTY."""
    if not requested or _QUIET or os.environ.get("MMV_TORCH_QUIET", "") not in ("", "0"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable: Iterable[Any] | None = None, *, requested: bool = True, **kwargs: Any) -> Any:
    """A ``tqdm`` bar over ``iterable`` on stderr, disabled unless :func:`enabled`; ``kwargs`` go to tqdm
    (``total``, ``desc``, ``unit``, ...)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not enabled(requested), file=sys.stderr, dynamic_ncols=True, **kwargs)
