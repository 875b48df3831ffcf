"""The lock: constraints.txt fixes every package to the tested version, README's set-up commands and
.ci/run install with it, and pyproject.toml bounds every dependency below a breaking major."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from ops_util import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert m, f"constraints.txt: not an exact pin: {line!r}"
        pins[canonicalize_name(m[1])] = Version(m[2])
    return pins


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_constraints_pin_every_dependency_within_pyproject_bounds():
    pins = constraints()
    assert "emi-ray" not in pins
    reqs = [Requirement(r) for r in project()["dependencies"] + project()["optional-dependencies"]["dev"]]
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"{r.name} is not in constraints.txt"
        assert r.specifier.contains(pins[name], prereleases=True), f"constraints.txt {name}=={pins[name]} vs {r}"
    for pinned in ("torch", "torchvision", "torchaudio", "ray", "boto3"):  # cluster.yaml relies on these
        assert pinned in pins, pinned


def test_pyproject_bounds_every_dependency():
    for r in map(Requirement, project()["dependencies"] + project()["optional-dependencies"]["dev"]):
        ops = {s.operator for s in r.specifier}
        assert ops & {"==", "<", "~="}, f"{r} has no upper bound"


def test_this_venv_is_the_locked_one():
    """The venv these tests run in has the locked versions (else refresh constraints.txt after testing)."""
    drift = []
    for name, version in constraints().items():
        try:
            have = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # e.g. a package only another platform needs
        if have != version:
            drift.append(f"{name}: installed {have}, constraints.txt {version}")
    assert not drift, drift


def _readme_command(n: int) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1]
    blocks = re.findall(r"```bash\n\s*(.+?)\n\s*```", section)
    return blocks[n - 1].strip()


def test_readme_commands_and_ci_install_with_constraints():
    ci = (ROOT / ".ci/run").read_text()
    m = re.search(r"^README_COMMAND_2='(.+)'$", ci, re.M)
    assert m and 'bash -c "$README_COMMAND_2"' in ci
    assert _readme_command(2) == m[1]
    assert "pip install -c constraints.txt -e \".[dev]\"" in m[1] and m[1].endswith("python -m pytest -q")
    assert "pip install -c constraints.txt -e . " in _readme_command(1)
    setup = "\n".join(__import__("yaml").safe_load((ROOT / "cluster.yaml").read_text())["setup_commands"])
    assert "-c /home/ubuntu/emi-ray/constraints.txt -e /home/ubuntu/emi-ray" in setup
