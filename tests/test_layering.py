"""The import direction holds: schemas <- annotators <- pipelines <- dags; only transforms imports apache_beam.

Every import of our own code goes through the one namespace (``conceptkit.<layer>``); a bare ``pipelines`` or
``schemas`` import would pick up whatever package of that name is on sys.path.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["schemas", "annotators", "pipelines", "dags"]
SOURCES = [*ORDER, "conceptkit"]


def imports(path: Path) -> set[str]:
    """Top-level names imported by ``path``, with ``conceptkit.X`` counted as layer ``X``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            parts = module.split(".")
            names.add(parts[1] if parts[0] == "conceptkit" and len(parts) > 1 else parts[0])
    return names


def test_import_direction():
    problems = []
    for rank, package in enumerate(ORDER):
        for path in (ROOT / package).rglob("*.py"):
            later = imports(path) & set(ORDER[rank + 1 :])
            if later:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(later)}")
    assert not problems


def test_no_bare_imports_of_our_layers():
    """``import pipelines`` / ``from schemas import ...`` would resolve to a decoy package, never to ours."""
    bare = []
    for package in SOURCES + ["tests", "benchmarks"]:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    heads = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    heads = [node.module.split(".")[0]]
                else:
                    continue
                if set(heads) & {"pipelines", "annotators", "schemas"}:
                    bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bare


def test_only_beam_wiring_imports_beam():
    users = sorted(
        str(p.relative_to(ROOT))
        for package in SOURCES
        for p in (ROOT / package).rglob("*.py")
        if "apache_beam" in imports(p)
    )
    assert all(u.endswith("transforms.py") for u in users), users
