"""pyproject.toml, environment.yml and env/requirements.txt name the same packages."""

from __future__ import annotations

import re
import tomllib

import yaml

from spgnet.config import PROJECT_ROOT


def _name(requirement: str) -> str:
    requirement = requirement.replace("--no-build-isolation", "").strip()
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> set[str]:
    data = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    names = {_name(r) for r in data["project"]["dependencies"]}
    # the environment the README's commands create has the test and slurm extras (the SLURM
    # profile's README command is dry-run by the tests)
    extras = data["project"]["optional-dependencies"]
    return names | {_name(r) for extra in ("test", "slurm") for r in extras[extra]}


def _environment_yml() -> set[str]:
    data = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in data["dependencies"] if isinstance(d, dict))
    return {_name(r) for r in pip} - {"setuptools-scm"}  # a build tool of inplace-abn, not a dependency


def _requirements() -> set[str]:
    lines = (PROJECT_ROOT / "env" / "requirements.txt").read_text().splitlines()
    return {_name(line) for line in lines if line.strip() and not line.startswith("#")}


def test_pyproject_and_environment_yml_name_the_same_packages():
    assert _pyproject() == _environment_yml()


def test_requirements_file_matches_pyproject():
    assert _requirements() == _pyproject()
