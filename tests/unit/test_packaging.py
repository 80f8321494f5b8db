"""The installable package: the wheel builds offline, holds the package and its data, and the
installed console script ``padding-audit`` runs from a temporary target (no network, no index).

Built with the environment's setuptools (``--no-build-isolation``: an isolated build would
fetch setuptools from an index). The installed code is run from outside the repository, so
it cannot fall back on the checkout's ``extraction``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import extraction

ROOT = Path(__file__).resolve().parents[2]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _offline_env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build leaves build/ and an .egg-info in the checkout, and
    # that egg-info makes importlib.metadata see the checkout as installed.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "extraction", source / "extraction", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [*PIP, "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out)],
        check=True,
        cwd=out,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    (built,) = out.glob("padding_audit-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([*PIP, "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)], check=True)
    return target


def test_wheel_holds_the_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name == f"padding_audit-{extraction.__version__}-py3-none-any.whl"
    assert "extraction/data/sentiment_demo.csv" in names
    assert {"extraction/cli.py", "extraction/check_extractor.py", "extraction/views/report_html.py"} <= set(names)
    assert (
        "extraction/audit/run.py" in names
        and "extraction/storage/shards.py" in names
        and "extraction/models/tiny.py" in names
    )
    tops = {name.split("/")[0] for name in names}
    assert tops == {"extraction", f"padding_audit-{extraction.__version__}.dist-info"}  # no tests, app, bench
    entry_points = zipfile.ZipFile(wheel).read(f"padding_audit-{extraction.__version__}.dist-info/entry_points.txt")
    assert "padding-audit = extraction.cli:main" in entry_points.decode()


def test_console_script_runs_from_the_target(site, tmp_path):
    script = site / "bin" / "padding-audit"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, env=_offline_env(site), timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: padding-audit")
    for command in ("compare", "audit", "extract", "probe"):
        assert command in result.stdout


def test_installed_package_is_the_target_and_reads_its_data(site, tmp_path):
    probe = (
        "import extraction, json; from extraction.probing.labelled import builtin_dataset; "
        "print(json.dumps([extraction.__file__, extraction.__version__, len(builtin_dataset().texts)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=_offline_env(site), timeout=300
    )
    assert result.returncode == 0, result.stderr
    path, version, rows = json.loads(result.stdout)
    assert Path(path).is_relative_to(site)
    assert version == extraction.__version__
    assert rows == 200


def test_dependencies_admit_the_tested_pins():
    """Each exact pin of requirements.txt satisfies the package's range for it; torch has a
    lower bound only, so installing the package never swaps the installed torch build."""
    from packaging.requirements import Requirement

    project = _pyproject()["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["formats"]
    declared = {Requirement(spec).name: Requirement(spec) for spec in specs}
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            requirement = Requirement(line)
            pins[requirement.name] = next(iter(requirement.specifier)).version
    assert all(spec.operator in (">=", ">") for spec in declared["torch"].specifier)
    for name, version in pins.items():
        if name in declared:
            assert declared[name].specifier.contains(version), f"{name}=={version} not in {declared[name].specifier}"
    runtime = {"torch", "transformers", "tokenizers", "gguf", "accelerate", "numpy", "pandas", "plotly"}
    assert runtime <= set(declared)
