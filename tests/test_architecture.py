"""The layering of docs/architecture.md: a module imports only from layers below it, L1 siblings do not
import each other, and ``import mmv_torch`` needs only torch and numpy."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmv_torch"

LAYERS = {"fileio": -1, "config": 0, "dist": 0, "runs": 0, "models": 1, "losses": 1, "data": 1, "weights": 2,
          "train": 3, "eval": 3, "index": 4, "demo": 5, "cli": 6, "__main__": 7}


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
                problems.append(f"{path.relative_to(src)} (L{LAYERS[group]}) imports {dep} (L{LAYERS[dep]})")
    return problems


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
        "config.py (L0) imports train (L3)",
        "data/bad.py (L1) imports train (L3)",
        "data/bad2.py (L1) imports models (L1)",
        "data/bad3.py (L1) imports models (L1)",
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
