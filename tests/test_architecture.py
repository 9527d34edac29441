"""The layering of docs/architecture.md: the folder tree is the layer table.

The package's top-level packages and modules stand on ordered rungs (:data:`RUNGS`); a module imports only
from rungs below its own, packages on one rung do not import each other, no two modules import each
other (directly or round a longer loop), inside ``data/`` the ``media/`` and ``text/`` subpackages import
nothing else of ``data/`` and nothing imports the offline ``tools/`` or ``prepare/``, and
``import mmv_torch`` needs only torch and numpy."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmv_torch"

RUNGS = (("fileio", "extras", "progress", "version"), ("config", "dist", "runs"), ("models", "losses", "data"),
         ("weights",), ("train", "eval", "api"), ("index",), ("demo",), ("cli",), ("__main__",))
"""The rungs, bottom first: atomic writes, optional dependencies, progress bars, the version; configs,
process groups, run folders; networks, losses, the input pipeline; everything that holds weights; training,
evaluation and ``load()``; the search index; the demo; the command line; ``python -m mmv_torch``."""

LAYERS = {name: rung for rung, names in enumerate(RUNGS) for name in names}
"""Top-level package or module -> its rung."""


def _group(module_path: Path, src: Path = SRC) -> str:
    rel = module_path.relative_to(src)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _package(module_path: Path, src: Path = SRC) -> list[str]:
    """The package a module's relative imports start from: ``data/decode.py`` and ``data/__init__.py``
    are both in ``mmv_torch.data``."""
    return [src.name, *module_path.relative_to(src).parent.parts]


def _absolute_modules(node: ast.ImportFrom | ast.Import, package: list[str], src: Path = SRC) -> set[str]:
    """The absolute modules an import statement reads, relative imports resolved against ``package``.

    ``from X import name`` reads ``X.name`` when that is a module of the source tree (``from .. import
    dist``), else ``X`` (``from ..config import DataConfig`` reads ``mmv_torch.config``).
    """
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        if node.level > len(package):
            raise ValueError(f"relative import beyond the top-level package: level {node.level} in {package}")
        base = package[: len(package) - node.level + 1]
    else:
        base = []
    base = base + (node.module.split(".") if node.module else [])
    found = set()
    for alias in node.names:
        sub = src.parent.joinpath(*base, alias.name)
        if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
            found.add(".".join([*base, alias.name]))
        else:
            found.add(".".join(base))
    return found


def _imports(path: Path, src: Path = SRC) -> set[str]:
    """The top-level ``mmv_torch`` modules (layer groups) that ``path`` imports, absolute or relative;
    ``__init__`` when it imports a name of the package itself (``from mmv_torch import create_model``)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for module in _absolute_modules(node, _package(path, src), src):
                parts = module.split(".")
                if parts[0] == src.name:
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def _layer_problems(src: Path = SRC) -> list[str]:
    """Every import of a module from its own layer or a higher one, in the package at ``src``."""
    problems = []
    for path in sorted(src.rglob("*.py")):
        group = _group(path, src)
        if group == "__init__":
            continue  # the public API re-exports
        assert group in LAYERS, f"{path} is not placed in a layer; add it to LAYERS"
        for dep in sorted(_imports(path, src)):
            if dep == group:
                continue
            if dep == "__init__":
                problems.append(f"{path.relative_to(src)} imports the package's public API; import the module")
                continue
            assert dep in LAYERS, f"{path} imports unknown mmv_torch module {dep}"
            if LAYERS[dep] >= LAYERS[group]:
                problems.append(f"{path.relative_to(src)} (rung {LAYERS[group]}) imports {dep} (rung {LAYERS[dep]})")
    return problems


def _module_name(path: Path, src: Path = SRC) -> str:
    """``data/media/decode.py`` -> ``mmv_torch.data.media.decode``; a package's ``__init__.py`` is the package."""
    parts = [src.name, *path.relative_to(src).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the package modules it imports (at the top or inside functions), by dotted name."""
    modules = {_module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= {m for m in _absolute_modules(node, _package(path, src), src) if m in modules}
        graph[name] = deps - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: each strongly connected set of two or more modules, sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _data_problems(src: Path = SRC) -> list[str]:
    """Imports that break the rules inside ``data/``: ``media/`` and ``text/`` import nothing else of
    ``data/`` (each may import itself); nothing outside ``data/tools/`` imports it, nothing outside
    ``data/prepare/`` imports that."""
    problems = []
    data = f"{src.name}.data"
    for name, deps in sorted(_module_graph(src).items()):
        if not name.startswith(data + "."):
            continue
        own = name.split(".")[2]
        for dep in sorted(deps):
            if not dep.startswith(data + ".") and dep != data:
                continue
            target = dep.split(".")[2] if dep != data else ""
            if own in ("media", "text") and target != own:
                problems.append(f"{name} imports {dep}: data/{own}/ imports nothing else of data/")
            elif target in ("tools", "prepare") and own != target:
                problems.append(f"{name} imports {dep}: nothing in data/ imports the offline data/{target}/")
    return problems


def test_no_module_import_cycles():
    assert _cycles(_module_graph()) == []


def test_data_subpackage_rules():
    assert _data_problems() == []


def test_the_cycle_and_data_checkers_catch_violations(tmp_path):
    src = tmp_path / "mmv_torch"
    for folder in ("data/media", "data/text", "data/tools", "data/prepare"):
        (src / folder).mkdir(parents=True)
    for name in ("__init__.py", "data/__init__.py", "data/media/__init__.py", "data/text/__init__.py",
                 "data/tools/__init__.py", "data/prepare/__init__.py", "data/tools/check.py", "data/prepare/ucf.py"):
        (src / name).write_text("")
    (src / "data" / "media" / "decode.py").write_text("from mmv_torch.data.media import audio\n")
    (src / "data" / "media" / "audio.py").write_text("import numpy\n")
    (src / "data" / "text" / "tok.py").write_text("from mmv_torch.data.media.audio import x\n")
    (src / "data" / "sources.py").write_text("def f():\n    from mmv_torch.data.tools.check import c\n")
    (src / "data" / "a.py").write_text("from mmv_torch.data import b\n")
    (src / "data" / "b.py").write_text("def g():\n    from . import c\n")
    (src / "data" / "c.py").write_text("from .a import z\nfrom .prepare import ucf\n")
    (src / "data" / "tools" / "bench.py").write_text("from mmv_torch.data.tools import check\n")
    assert _cycles(_module_graph(src)) == [["mmv_torch.data.a", "mmv_torch.data.b", "mmv_torch.data.c"]]
    assert _data_problems(src) == [
        "mmv_torch.data.c imports mmv_torch.data.prepare.ucf: nothing in data/ imports the offline data/prepare/",
        "mmv_torch.data.sources imports mmv_torch.data.tools.check: nothing in data/ imports the offline data/tools/",
        "mmv_torch.data.text.tok imports mmv_torch.data.media.audio: data/text/ imports nothing else of data/",
    ]


def test_modules_import_only_lower_layers():
    assert _layer_problems() == []


def test_relative_imports_resolve_to_their_absolute_modules():
    data = SRC / "data" / "shards.py"

    def resolve(code: str, path: Path = data) -> set[str]:
        return _absolute_modules(ast.parse(code).body[0], _package(path))

    assert resolve("from .decode import probe") == {"mmv_torch.data.decode"}
    assert resolve("from ..config import DataConfig") == {"mmv_torch.config"}
    assert resolve("from .. import dist") == {"mmv_torch.dist"}
    assert resolve("from . import shards, text") == {"mmv_torch.data.shards", "mmv_torch.data.text"}
    assert resolve("from ..models.mmv import MMV") == {"mmv_torch.models.mmv"}
    assert resolve("from .. import create_model") == {"mmv_torch"}
    assert resolve("from mmv_torch import dist") == {"mmv_torch.dist"}
    assert resolve("import mmv_torch.train.loop as T") == {"mmv_torch.train.loop"}
    # an __init__.py is its own package: ``.`` is the folder it is in
    assert resolve("from .datasets import read_jsonl", SRC / "data" / "__init__.py") == {"mmv_torch.data.datasets"}
    assert resolve("from .config import get_preset", SRC / "__init__.py") == {"mmv_torch.config"}
    assert _imports(SRC / "data" / "datasets.py") >= {"config", "data"}


def test_the_checker_catches_forbidden_relative_imports(tmp_path):
    src = tmp_path / "mmv_torch"
    (src / "data").mkdir(parents=True)
    for name in ("__init__.py", "config.py", "train.py", "dist.py", "models.py", "data/__init__.py",
                 "data/decode.py"):
        (src / name).write_text("")
    (src / "data" / "ok.py").write_text("from ..config import DataConfig\nfrom .decode import probe\n"
                                        "from .. import dist\n")
    assert _layer_problems(src) == []
    (src / "data" / "bad.py").write_text("from ..train import train\n")
    (src / "data" / "bad2.py").write_text("from .. import models\n")  # an L1 sibling
    (src / "data" / "bad3.py").write_text("def f():\n    from ..models import create_model\n")
    (src / "config.py").write_text("from . import train\n")
    (src / "dist.py").write_text("from . import get_preset\n")
    assert _layer_problems(src) == [
        "config.py (rung 1) imports train (rung 4)",
        "data/bad.py (rung 2) imports train (rung 4)",
        "data/bad2.py (rung 2) imports models (rung 2)",
        "data/bad3.py (rung 2) imports models (rung 2)",
        "dist.py imports the package's public API; import the module",
    ]


def test_import_needs_only_torch_and_numpy():
    code = ("import sys, mmv_torch, mmv_torch.models.mmv, mmv_torch.losses, mmv_torch.config;"
            "heavy = [m for m in ('av', 'sklearn', 'webdataset', 'pyarrow', 'gensim', 'tensorboard', 'matplotlib',"
            " 'safetensors', 'scipy') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_benchmarks_and_experiments_use_public_names_only():
    """Scripts outside the package import only public ``mmv_torch`` names (no ``_private`` ones), so a
    refactoring of the package's internals cannot silently change what they measure."""
    root = SRC.parents[1]
    offenders = []
    for folder in ("benchmarks", "experiments"):
        for path in sorted((root / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmv_torch"):
                    parts = node.module.split(".") + [a.name for a in node.names]
                    offenders += [f"{path.name}: {node.module} import {a.name}" for a in node.names
                                  if any(p.startswith("_") and not p.startswith("__") for p in parts)]
    assert offenders == []
