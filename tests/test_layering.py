"""The import direction holds: schemas <- annotators <- pipelines <- dags; only transforms imports apache_beam."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["schemas", "annotators", "pipelines", "dags"]


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_import_direction():
    problems = []
    for rank, package in enumerate(ORDER):
        for path in (ROOT / package).rglob("*.py"):
            later = imports(path) & set(ORDER[rank + 1 :])
            if later:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(later)}")
    assert not problems


def test_only_beam_wiring_imports_beam():
    users = sorted(
        str(p.relative_to(ROOT))
        for package in ORDER
        for p in (ROOT / package).rglob("*.py")
        if "apache_beam" in imports(p)
    )
    assert all(u.endswith("transforms.py") for u in users), users
