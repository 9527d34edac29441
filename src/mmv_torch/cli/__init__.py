"""The command line, the only place that parses options: ``mmv-torch <command>`` (also ``python -m
mmv_torch``). :mod:`~mmv_torch.cli.main` assembles the parser and holds the error boundary and the
``models``, ``convert``, ``train`` and ``demo`` commands; :mod:`~mmv_torch.cli.eval` ``embed`` and ``eval``;
:mod:`~mmv_torch.cli.data` ``data`` and ``vocab``; :mod:`~mmv_torch.cli.index` ``index`` and ``serve``;
:mod:`~mmv_torch.cli.support` the option types, output checks and one-line errors;
:mod:`~mmv_torch.cli.runtime` the process-wide memory settings made before the first tensor."""

from mmv_torch.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
