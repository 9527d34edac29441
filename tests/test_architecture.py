"""The layering of architecture.md: a module imports only from layers below it, L1 siblings do not
import each other, and ``import mmv_torch`` needs only torch and numpy."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmv_torch"

LAYERS = {"fileio": -1, "runtime": 0, "config": 0, "dist": 0, "models": 1, "losses": 1, "data": 1, "eval": 1,
          "convert": 2, "deflate": 2, "train": 3, "demo": 4, "cli": 5, "__main__": 6}


def _group(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmv_torch."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mmv_torch."):
                    found.add(alias.name.split(".")[1])
    return found


def test_modules_import_only_lower_layers():
    problems = []
    for path in SRC.rglob("*.py"):
        group = _group(path)
        if group == "__init__":
            continue  # the public API re-exports
        assert group in LAYERS, f"{path} is not placed in a layer; add it to LAYERS"
        for dep in _imports(path):
            if dep == group:
                continue
            assert dep in LAYERS, f"{path} imports unknown mmv_torch module {dep}"
            if LAYERS[dep] >= LAYERS[group]:
                problems.append(f"{path.relative_to(SRC)} (L{LAYERS[group]}) imports {dep} (L{LAYERS[dep]})")
    assert problems == []


def test_import_needs_only_torch_and_numpy():
    code = ("import sys, mmv_torch, mmv_torch.models.mmv, mmv_torch.losses, mmv_torch.config;"
            "heavy = [m for m in ('av', 'sklearn', 'webdataset', 'pyarrow', 'gensim', 'tensorboard', 'matplotlib',"
            " 'safetensors', 'scipy') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
