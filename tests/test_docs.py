"""The documents the repository cites exist, and the README stays a short user document.

Every path-like token ending in ``.md`` in code, tests, benchmarks, scripts, experiments, docs, the README
or the Makefile must name a file that exists: relative to the repository root, relative to the citing
file's folder, or (a bare name) under ``docs/``.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Folders and top-level files whose text is scanned for ``*.md`` references.
SCANNED_DIRS = ("src", "tests", "benchmarks", "scripts", "experiments", "docs", ".github")
SCANNED_FILES = ("README.md", "Makefile", "pyproject.toml")
SCANNED_SUFFIXES = {".py", ".md", ".sh", ".toml", ".cfg", ".txt", ".yml", ".yaml"}

# Markdown files the code writes (not documents of the repository): the ``--json OUT`` reports' ``OUT.md``,
# the demo's ``report.md`` (e.g. ``runs/demo/report.md``) and the tests' ``lin.md``. A citation under
# ``docs/`` is never exempt.
OUTPUT_NAMES = {"OUT.md", "report.md", "lin.md"}

README_MAX_LINES = 200

_MD_TOKEN = re.compile(r"[\w./:-]*\w\.md\b")


def _scanned_files(root: Path) -> list[Path]:
    files = [root / name for name in SCANNED_FILES if (root / name).is_file()]
    for folder in SCANNED_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and (path.suffix in SCANNED_SUFFIXES or path.name == "Makefile") and \
                    "__pycache__" not in path.parts and path.resolve() != Path(__file__).resolve():
                files.append(path)  # this file is left out: its fixtures cite made-up documents
    return files


def _resolves(root: Path, citing: Path, token: str) -> bool:
    candidates = [root / token, citing.parent / token]
    if "/" not in token:
        candidates.append(root / "docs" / token)
    return any(c.is_file() for c in candidates)


def missing_md_references(root: Path) -> list[str]:
    """``"file:line: token"`` for every ``*.md`` path cited under ``root`` that names no existing file."""
    missing = []
    for path in _scanned_files(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            for match in _MD_TOKEN.finditer(line):
                token = match.group(0).rstrip(".")
                if "://" in token:
                    continue  # a web address, not a repository path
                token = token.removeprefix("./")
                if Path(token).name in OUTPUT_NAMES and not token.startswith("docs/"):
                    continue
                if not _resolves(root, path, token):
                    missing.append(f"{path.relative_to(root)}:{lineno}: {token}")
    return missing


def test_every_cited_md_file_exists():
    assert missing_md_references(ROOT) == []


def test_checker_reports_a_missing_document(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("See [data](data.md) and [top](../NOTES.md).\n")
    (tmp_path / "docs" / "data.md").write_text("Back to the guide: guide.md.\n")
    (tmp_path / "NOTES.md").write_text("notes\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mod.py").write_text(
        '"""Details in docs/nonexistent.md; layout in docs/guide.md; also guide.md."""\n'
        'OUT = "the report goes to OUT.md and runs/demo/report.md"\n'
        'URL = "https://example.org/missing.md"\n')
    assert missing_md_references(tmp_path) == ["src/mod.py:1: docs/nonexistent.md"]


def test_output_names_do_not_exempt_docs(tmp_path):
    (tmp_path / "README.md").write_text("Read docs/report.md.\n")
    assert missing_md_references(tmp_path) == ["README.md:1: docs/report.md"]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def _documented_layers(text: str) -> dict[str, int]:
    """``{package: rung}`` from the rows ``| R<n> | `a`, `b` | ... |`` of the layering table."""
    layers = {}
    for match in re.finditer(r"^\| R(\d+) \| ([^|]+) \|", text, flags=re.MULTILINE):
        for name in re.findall(r"`([\w/]+)`", match.group(2)):
            layers[name] = int(match.group(1))
    return layers


def test_architecture_doc_lists_every_layer():
    from tests.test_architecture import LAYERS

    documented = _documented_layers((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    wrong = {name: (layer, documented.get(name)) for name, layer in LAYERS.items() if documented.get(name) != layer}
    assert wrong == {}, f"docs/architecture.md: layer (in LAYERS, in the doc) differs for {wrong}"


def test_documented_layers_are_parsed():
    table = "| rung | packages |\n|---|---|\n| R0 | `fileio` | writes |\n| R2 | `models`, `data` | x |\n"
    assert _documented_layers(table) == {"fileio": 0, "models": 2, "data": 2}


_DOTTED = re.compile(r"\bmmv_torch(?:\.[A-Za-z_]\w*)+")
_PY_PATH = re.compile(r"`((?:[\w.-]+/)+[\w-]+\.py)\b")
# Paths of other projects' code that the documents cite (DeepMind's official MMV code, DMVR).
FOREIGN_PREFIXES = ("mmv/", "dmvr/")


def _module_file(root: Path, parts: list[str]) -> Path | None:
    base = root / "src" / Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _dotted_resolves(root: Path, dotted: str) -> bool:
    """``mmv_torch.a.b.name``: the longest module prefix exists and the rest starts with a name it mentions."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        found = _module_file(root, parts[:cut])
        if found is not None:
            rest = parts[cut:]
            return not rest or re.search(rf"\b{re.escape(rest[0])}\b", found.read_text(encoding="utf-8")) is not None
    return False


def missing_code_references(root: Path) -> list[str]:
    """``"file:line: token"`` for every ``mmv_torch.x.y`` name and every backticked ``a/b.py`` path in the
    README and docs/ that names no module, attribute or file (paths resolve from the root, ``src/mmv_torch/``
    or ``tests/``; the official code's paths are skipped). CHANGELOG.md names the old modules on purpose and
    is not read."""
    files = [root / "README.md"] + sorted((root / "docs").rglob("*.md"))
    missing = []
    for path in files:
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _DOTTED.finditer(line):
                if not _dotted_resolves(root, match.group(0)):
                    missing.append(f"{path.relative_to(root)}:{lineno}: {match.group(0)}")
            for match in _PY_PATH.finditer(line):
                token = match.group(1)
                if token.startswith(FOREIGN_PREFIXES):
                    continue
                if not any((base / token).is_file() for base in (root, root / "src" / "mmv_torch", root / "tests")):
                    missing.append(f"{path.relative_to(root)}:{lineno}: {token}")
    return missing


def test_every_cited_module_and_source_file_exists():
    assert missing_code_references(ROOT) == []


def test_code_reference_checker_reports_moved_modules(tmp_path):
    (tmp_path / "src" / "mmv_torch" / "eval").mkdir(parents=True)
    (tmp_path / "src" / "mmv_torch" / "__init__.py").write_text("")
    (tmp_path / "src" / "mmv_torch" / "eval" / "__init__.py").write_text("")
    (tmp_path / "src" / "mmv_torch" / "eval" / "pipelines.py").write_text("def eval_linear(): ...\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "Use `mmv_torch.eval.pipelines.eval_linear` in `eval/pipelines.py`.\n"
        "Not mmv_torch.evaluate.linear_probe, mmv_torch.eval.pipelines.linear_probe or `deflate.py` "
        "(a bare name) but `src/mmv_torch/deflate.py`.\n")
    assert missing_code_references(tmp_path) == [
        "docs/a.md:2: mmv_torch.evaluate.linear_probe", "docs/a.md:2: mmv_torch.eval.pipelines.linear_probe",
        "docs/a.md:2: src/mmv_torch/deflate.py"]
