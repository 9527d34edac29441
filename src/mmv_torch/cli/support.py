"""Command-line plumbing shared by the subcommands (layer L3): one-line usage errors, numeric option
types checked at parse time, output paths checked before any work, the failures that are the user's
(one line, exit status 2), and the command that continues an interrupted run."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
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


_FILE_OUTPUTS = {"json": "--json", "clean": "--clean"}
_INPUTS = ("data", "path", "manifest", "checkpoint", "config")


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path of the command, validated before any work (see ``fileio.check_output``)."""
    from mmv_torch.fileio import check_output

    inputs = tuple(str(getattr(args, k)) for k in _INPUTS if getattr(args, k, None))
    for attr, option in _FILE_OUTPUTS.items():
        if getattr(args, attr, None):
            check_output(getattr(args, attr), option, inputs=inputs, suffixes=(".md",) if attr == "json" else ())
    if getattr(args, "out", None):
        if args.command == "embed":  # FILE -> FILE.npy + FILE.index.json
            check_output(args.out, "--out", inputs=inputs, suffixes=(".npy", ".index.json"))
        else:
            check_output(args.out, "--out", folder=True, inputs=inputs)
    if getattr(args, "out_dir", None):
        check_output(args.out_dir, "out_dir", folder=True, inputs=inputs)


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
