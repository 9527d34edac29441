"""Safe loading of DeepMind's released MMV checkpoints (JAX/Haiku ``dill`` pickles).

The released files (``mmv_s3d.pkl``, ``mmv_tsm_resnet_x1.pkl``, ``mmv_tsm_resnet_x2.pkl``) are
``dill`` pickles of ``{'params': ..., 'state': ...}`` whose mappings are Haiku
``FlatMapping``/``frozendict`` objects or dicts keyed by module path, then leaf name, with numpy (or
JAX) arrays as leaves. :func:`load_official_pickle` reads them with neither haiku, jax nor dill
installed: a restricted unpickler resolves only the globals needed to rebuild numpy arrays and
mappings (``_ALLOWED_GLOBALS``: numpy's array and scalar constructors, haiku's mappings as plain
dicts, and stand-ins for the dill/jax array helpers that accept only numpy's array constructors)
and refuses every other global with :class:`UnsafePickleError` naming it, so nothing from the file
is executed. :func:`safe_load_pickle` does the same for bytes or an open stream.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(ValueError):
    """A checkpoint pickle references a global that is not needed to rebuild arrays and mappings."""


def _numpy_module(name: str) -> Any:
    """``numpy._core.<name>`` on numpy 2, ``numpy.core.<name>`` on numpy 1 (without the numpy 2 warning)."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{name}")


_multiarray = _numpy_module("multiarray")
_numeric = _numpy_module("numeric")

# The functions that can create an ndarray from pickled state; anything handed to the dill/jax
# array helpers as their constructor must be one of these.
_ARRAY_CONSTRUCTORS = (_multiarray._reconstruct, _numeric._frombuffer)


def _haiku_mapping(*args: Any, **kwargs: Any) -> dict:
    """Stand-in for ``haiku._src.data_structures.FlatMapping`` / ``frozendict``: a plain dict.

    Both pickle as ``(cls, (mapping,))``; nested values are rebuilt by the same stand-in.
    """
    return dict(*args, **kwargs)


def _safe_codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as used by protocol-2 pickles for ``bytes``: only str → latin-1 bytes."""
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise UnsafePickleError(f"_codecs.encode is only allowed as (str, 'latin1'), got ({type(text).__name__}, "
                                f"{encoding!r})")
    return text.encode("latin-1")


def _check_constructor(fun: Any, where: str) -> None:
    if not any(fun is c for c in _ARRAY_CONSTRUCTORS):
        raise UnsafePickleError(f"{where}: array constructor {fun!r} is not a numpy array constructor")


def _dill_create_array(fun: Any, args: tuple, state: Any, npdict: Any = None) -> np.ndarray:
    """``dill._dill._create_array``: an ndarray from ``fun(*args)`` and its ``__setstate__`` state."""
    _check_constructor(fun, "dill._dill._create_array")
    array = fun(*args)
    array.__setstate__(state)
    if npdict:
        raise UnsafePickleError("dill._dill._create_array: arrays with instance attributes are not allowed")
    return array


def _dill_create_dtypemeta(scalar_type: Any) -> type:
    """``dill._dill._create_dtypemeta``: the dtype class of a numpy scalar type."""
    if not (isinstance(scalar_type, type) and issubclass(scalar_type, np.generic)):
        raise UnsafePickleError(f"dill._dill._create_dtypemeta: {scalar_type!r} is not a numpy scalar type")
    return type(np.dtype(scalar_type))


_DILL_TYPES = {"DictType": dict, "dict": dict, "ListType": list, "list": list, "TupleType": tuple,
               "tuple": tuple}


def _dill_load_type(name: str) -> type:
    """``dill._dill._load_type`` restricted to plain container types."""
    if name not in _DILL_TYPES:
        raise UnsafePickleError(f"dill._dill._load_type({name!r}) is not allowed; only {sorted(_DILL_TYPES)}")
    return _DILL_TYPES[name]


def _jax_reconstruct_array(fun: Any, args: tuple, arr_state: Any, aval_state: Any) -> np.ndarray:
    """``jax._src.array._reconstruct_array`` (how ``jax.Array`` pickles), returning the numpy value."""
    _check_constructor(fun, "jax._src.array._reconstruct_array")
    array = fun(*args)
    array.__setstate__(arr_state)
    return array


_NUMPY_SCALAR_TYPES = ("bool_", "float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                       "uint16", "uint32", "uint64", "complex64", "complex128")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _safe_codecs_encode,
        ("haiku._src.data_structures", "FlatMapping"): _haiku_mapping,
        ("haiku._src.data_structures", "FlatMap"): _haiku_mapping,
        ("haiku._src.data_structures", "frozendict"): _haiku_mapping,
        ("haiku.data_structures", "FlatMapping"): _haiku_mapping,
        ("dill._dill", "_create_array"): _dill_create_array,
        ("dill._dill", "_create_dtypemeta"): _dill_create_dtypemeta,
        ("dill._dill", "_load_type"): _dill_load_type,
        ("jax._src.array", "_reconstruct_array"): _jax_reconstruct_array,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = _multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = _numeric._frombuffer
    for name in _NUMPY_SCALAR_TYPES:
        table[("numpy", name)] = getattr(np, name)
    return table


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load the global '{module}.{name}'. An official MMV checkpoint "
                "only needs numpy arrays and haiku/dict mappings; nothing from this file was executed."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: persistent ids are not allowed in a checkpoint pickle")


def safe_load_pickle(data: bytes | io.BufferedIOBase, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the restricted unpickler (see module doc). ``source`` names it in errors.

    Raises :class:`UnsafePickleError` for a forbidden global and ``ValueError`` for a truncated or
    corrupt pickle.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return _RestrictedUnpickler(stream, source).load()
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"{source}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e
    except (TypeError, AttributeError, IndexError, KeyError, ValueError, OverflowError, MemoryError) as e:
        raise ValueError(f"{source}: corrupt pickle, cannot rebuild its objects ({type(e).__name__}: {e})") from e


def load_official_pickle(path: str | Path) -> dict[str, Any]:
    """Read an official checkpoint file with the restricted unpickler.

    Returns the top-level mapping as nested plain dicts with numpy leaves (haiku ``FlatMapping`` /
    ``frozendict`` and ``OrderedDict`` become ``dict``; JAX arrays become ``np.ndarray``).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ValueError(f"official checkpoint {p} does not exist")
    with open(p, "rb") as f:
        obj = safe_load_pickle(f, str(p))
    if not isinstance(obj, Mapping):
        raise ValueError(f"{p}: expected a mapping with 'params' and 'state', got {type(obj).__name__}")
    return _plain(obj)


def _plain(node: Any) -> Any:
    """Nested mappings (OrderedDict, haiku stand-ins) → plain dicts; leaves unchanged."""
    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    return node
