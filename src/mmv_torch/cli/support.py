"""Command-line plumbing shared by the subcommands: one-line usage errors, numeric option
types checked at parse time, the path role of every option (:func:`classify`) and the output paths checked
against the inputs before any work (:func:`check_outputs`), the failures that are the user's (one line,
exit status 2), and the command that continues an interrupted run."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default (``(default: 8)``) unless it is None / False or the help
    already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""  # argparse formats only options with help (Parser.add_argument adds it)
        default = action.default
        if (default is None or default is argparse.SUPPRESS or isinstance(default, bool) or "default" in text
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (``mmv-torch CMD: error: ...``) with exit status 2, no usage dump; help
    pages show the defaults (:class:`DefaultsFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        """``add_argument``; an option without help still shows its default."""
        default = kwargs.get("default")
        if kwargs.get("help") is None and default is not None and not isinstance(default, bool):
            kwargs["help"] = "default: %(default)s"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``lo``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    parse.__name__ = f"integer >= {lo}"
    return parse


def float_above(lo: float, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number > ``lo`` (>= with ``inclusive``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < lo or (value == lo and not inclusive):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>=' if inclusive else '>'} {lo:g}, "
                                             f"got {text}")
        return value

    parse.__name__ = f"number {'>=' if inclusive else '>'} {lo:g}"
    return parse


COUNT, POSITIVE, RATE, NONNEG = int_at_least(0), int_at_least(1), float_above(0.0), float_above(0.0, True)
"""Option types: an integer >= 0, an integer >= 1, a finite number > 0, a finite number >= 0."""


# ---------------------------------------------------------------------------------------------
# Path options: every subcommand names the role of each of its options (:func:`classify`), and
# :func:`check_outputs` checks its outputs against all of its inputs before any work.

INPUT = "input"
"""A file or folder the command reads; no output may be it."""
INPUT_SPECS = "input-specs"
"""``--data`` of ``train``: comma-separated manifests or folders (``PATH@WEIGHT``, ``synthetic[:N]``)."""
OWNED_INPUT = "owned-input"
"""An index, run, export or weights folder (or a file): no output may be it, nor lie where its format writes
(anywhere inside an index; inside other folders, one of :data:`OWNED_NAMES`)."""
OUTPUT = "output"
"""A file the command writes."""
VOCAB_OUTPUT = "vocab-output"
"""``vocab match --out``: a file, which may be the ``vocab.txt`` of the input weights folder (what the command
recovers for it)."""
REPORT = "report"
"""``--json OUT`` of the evaluations: ``OUT`` and ``OUT.md`` beside it."""
OUTPUT_STEM = "output-stem"
"""``embed --out FILE``: ``FILE.npy`` and ``FILE.index.json``."""
OUTPUT_FOLDER = "output-folder"
"""A folder the command writes into."""
REPLACED_FOLDER = "replaced-folder"
"""A folder the command replaces whole: no input may lie inside it."""
RESUME = "resume"
"""``train --resume``: ``latest``, a checkpoint file or a run folder; an input that may be ``--out`` itself."""
VALUE = "value"
"""Not a path (text, names, numbers, KEY=VALUE settings)."""

INPUT_ROLES = (INPUT, INPUT_SPECS, OWNED_INPUT, RESUME)
OUTPUT_ROLES = (OUTPUT, VOCAB_OUTPUT, REPORT, OUTPUT_STEM, OUTPUT_FOLDER, REPLACED_FOLDER)
ROLES = (*INPUT_ROLES, *OUTPUT_ROLES, VALUE)
PATH_ROLES_KEY = "path_roles"
"""The parser default (``args.path_roles``) that holds ``{dest: (role, option name)}`` of a subcommand."""

OWNED_NAMES = ("config.json", "log.jsonl", "checkpoints", "export", "finetune.pt", "finetune_log.jsonl",
               "model.safetensors", "vocab.txt", "tb", ".lock", "meta.sqlite", "vectors")
"""Entries of run, export, weights and index folders that only their own commands write."""


def classify(parser: argparse.ArgumentParser, **roles: str) -> None:
    """Record the role (:data:`ROLES`) of each path-valued option of ``parser`` by its ``dest``; every
    string-valued option of a subcommand must be named here (``tests/cli/test_paths.py`` walks the parsers)."""
    actions = {a.dest: a for a in parser._actions}
    table: dict[str, tuple[str, str]] = {}
    for dest, role in roles.items():
        if dest not in actions:
            raise KeyError(f"{parser.prog}: classify({dest}=...): no such option")
        if role not in ROLES:
            raise KeyError(f"{parser.prog}: classify({dest}={role!r}): not one of {ROLES}")
        a = actions[dest]
        table[dest] = (role, max(a.option_strings, key=len) if a.option_strings else str(a.metavar or dest))
    parser.set_defaults(**{PATH_ROLES_KEY: table})


def _values(args: argparse.Namespace, dest: str, role: str) -> list[str]:
    value = getattr(args, dest, None)
    if value is None or value == "":
        return []
    items = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    if role == INPUT_SPECS:  # a,b@2,synthetic:8
        items = [part.rsplit("@", 1)[0] for v in items for part in v.split(",")]
        items = [p for p in items if p and not p.startswith("synthetic")]
    if role == RESUME:
        items = [v for v in items if v != "latest"]
    return items


def _written(path: str, role: str) -> list[Path]:
    p = Path(path)
    if role == REPORT:
        return [p, p.with_suffix(".md")]
    if role == OUTPUT_STEM:
        return [Path(path + ".npy"), Path(path + ".index.json")]
    return [p]


def _same(a: Path, b: Path) -> bool:
    return a.absolute().resolve() == b.absolute().resolve()


def _inside(path: Path, folder: Path) -> Path | None:
    """``path`` relative to ``folder`` when it lies inside it or is it (None otherwise)."""
    try:
        return path.absolute().resolve().relative_to(folder.absolute().resolve())
    except ValueError:
        return None


def _owned_conflict(out: Path, folder: Path, role: str) -> str | None:
    """Why ``out`` (an output of ``role``) may not be written inside the owned input folder ``folder`` (None:
    it may)."""
    if not folder.is_dir():
        return None
    rel = _inside(out, folder)
    if rel is None or (role == VOCAB_OUTPUT and rel == Path("vocab.txt")):
        return None
    if rel == Path("."):
        return "is that folder"
    if (folder / "meta.sqlite").is_file():
        return "is inside that index folder"
    if rel.parts[0] in OWNED_NAMES:
        return "would replace a file of that folder"
    return None


def output_conflicts(inputs: list[tuple[str, str, str]], outputs: list[tuple[str, str, str]]) -> None:
    """Check ``(option, role, path)`` outputs against inputs and each other (see :func:`check_outputs`)."""
    from mmv_torch.fileio import check_output

    seen: list[tuple[str, Path]] = []
    for option, role, value in outputs:
        folder = role in (OUTPUT_FOLDER, REPLACED_FOLDER)
        check_output(value, option, folder=folder, suffixes=(".npy", ".index.json") if role == OUTPUT_STEM else ())
        for w in _written(value, role):
            for in_option, in_role, in_value in inputs:
                if in_role == RESUME and role == OUTPUT_FOLDER:
                    continue  # train --out RUN --resume RUN continues that run
                if _same(w, Path(in_value)):
                    raise ValueError(f"{option} {value}: would overwrite the input {in_option} {in_value}")
                why = _owned_conflict(w, Path(in_value), role) if in_role == OWNED_INPUT else None
                if why:
                    raise ValueError(f"{option} {value}: {why} ({in_option} {in_value}); write it elsewhere")
                if role == REPLACED_FOLDER and _inside(Path(in_value), w) is not None:
                    raise ValueError(f"{option} {value}: this folder is replaced whole, and it holds the input "
                                     f"{in_option} {in_value}; choose another folder")
            for other, p in seen:
                if _same(w, p) or (role == REPLACED_FOLDER and _inside(p, w) is not None):
                    raise ValueError(f"{option} {value} and {other}: both write {p}; give them different paths")
            seen.append((f"{option} {value}", w))


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path of the command, validated before any work (``fileio.check_output``): no output may
    be an input, lie inside an input index, replace a file of an input run, export or weights folder, be
    written by another output of the command, or be a folder replaced whole that holds an input. The roles
    come from the subcommand's :func:`classify`. Raises ``ValueError`` naming the options."""
    table: dict[str, tuple[str, str]] = getattr(args, PATH_ROLES_KEY, None) or {}
    inputs = [(name, role, v) for dest, (role, name) in table.items() if role in INPUT_ROLES
              for v in _values(args, dest, role)]
    outputs = [(name, role, v) for dest, (role, name) in table.items() if role in OUTPUT_ROLES
               for v in _values(args, dest, role)]
    output_conflicts(inputs, outputs)


def anticipated() -> tuple[type[BaseException], ...]:
    """Failures that are the user's input, data or machine, not a bug: one line, exit status 2."""
    from mmv_torch.data.datasets import SkipRateExceeded
    from mmv_torch.data.media.decode import DecodeError
    from mmv_torch.extras import MissingExtra

    return ValueError, OSError, SkipRateExceeded, DecodeError, MissingExtra


def one_line(e: BaseException) -> str:
    from mmv_torch.extras import MissingExtra

    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, (ValueError, MissingExtra)) else f"{type(e).__name__}: {text}"


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted run: the same one, ``--resume latest`` instead of
    any ``--resume X`` or ``--overwrite``."""
    import shlex

    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--resume":
            skip = True
            continue
        if a == "--overwrite" or a.startswith("--resume="):
            continue
        kept.append(a)
    return " ".join(shlex.quote(a) for a in ["mmv-torch", *kept, "--resume", "latest"])


def add_json_arg(p: argparse.ArgumentParser) -> None:
    """``--json OUT``: where a command writes its metrics and settings (and ``OUT.md``)."""
    p.add_argument("--json", default=None, metavar="OUT", help="write metrics + settings here (and OUT.md)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda`` (default: CUDA when available; :func:`device_name` resolves it)."""
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")


def device_name(name: str | None) -> str:
    """The torch device of ``--device`` (default: CUDA when available; this rank's GPU under torchrun);
    ``--device cuda`` without CUDA is a ``ValueError``."""
    import torch

    from mmv_torch import dist

    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: no CUDA device is available to this torch {torch.__version__} build")
    if name == "cuda" and dist.is_initialized():
        name = f"cuda:{dist.local_rank()}"
    return name
