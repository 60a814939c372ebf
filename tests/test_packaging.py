"""The built wheel installs one top-level import name, ``conceptkit``, and works beside decoy packages.

A local ``pipelines/`` or ``schemas/`` folder on sys.path (common in an Airflow DAG folder) must not shadow ours.
The wheel goes into a fresh venv without dependencies; the dependencies come from this test's own environment
through a path entry, so nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the tracked files: setuptools writes build/ into the source tree, and stale files there (or
    # untracked ones) must not decide what the wheel holds.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    (found,) = out.glob("conceptkit-*.whl")
    return found


def test_wheel_has_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"conceptkit"}
    for module in ("conceptkit/py.typed", "conceptkit/pipelines/cli/main.py", "conceptkit/schemas/annotations.py",
                   "conceptkit/annotators/index.py", "conceptkit/pipelines/selection/submodular.py"):
        assert module in names
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "conceptkit = conceptkit.pipelines.cli.main:main" in entry


def test_wheel_imports_beside_decoys(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)  # a wheel install is an unzip plus metadata; pip itself is not needed here
    # Dependencies (pyarrow, pydantic, ...) from this environment, after the venv's own site-packages.
    Path(site, "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    decoys = tmp_path / "work"
    for name in ("pipelines", "schemas", "annotators"):
        (decoys / name).mkdir(parents=True)
        (decoys / name / "__init__.py").write_text(f"raise ImportError('decoy {name} imported')\n")
    code = (
        "import conceptkit, conceptkit.pipelines.cli.main as cli, conceptkit.schemas.annotations as a\n"
        "import conceptkit.pipelines.runs.card, conceptkit.pipelines.readers.items, conceptkit.submodular as sm\n"
        "import sys\n"
        "assert 'pipelines' not in sys.modules and 'schemas' not in sys.modules, sorted(sys.modules)\n"
        "print(conceptkit.__version__, conceptkit.__file__, cli.__file__, a.__file__, sm.facility_location_greedy)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(python), "-c", code], cwd=decoys, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    version, *files = done.stdout.split()[:4]
    assert version
    assert all(f.startswith(site) for f in files), files
