"""Packaging: constraints.txt pins every dependency with hashes and names no registry (CI
installs from it, see .ci/run and .ci/constraints), and the wheel carries the OPC UA model."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
# pip options that point at a place to install from.
REGISTRY_OPTIONS = ("--index-url", "--extra-index-url", "--find-links", "--trusted-host",
                    "-i", "-f")

try:
    from packaging.utils import canonicalize_name
except ImportError:  # packaging is not installed: PEP 503's rule by hand
    def canonicalize_name(name: str) -> str:  # type: ignore[misc]
        return re.sub(r"[-_.]+", "-", name).lower()


def logical_lines(text: str) -> list[str]:
    """The lines of a requirements file with backslash continuations joined, comments gone."""
    joined = re.sub(r"\\\n", " ", text)
    lines = (line.split(" #", 1)[0].strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins() -> dict[str, tuple[str, list[str]]]:
    """canonical name -> (version, hashes) of every requirement line of constraints.txt."""
    found: dict[str, tuple[str, list[str]]] = {}
    for line in logical_lines(CONSTRAINTS.read_text()):
        if line.startswith("-"):
            continue
        spec, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)", spec)
        assert match, f"not an exact pin: {line}"
        hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
        found[canonicalize_name(match.group(1))] = (match.group(3), hashes)
    return found


def declared() -> list[str]:
    """The requirements of [project] dependencies and of the test and dev extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["test"], *extras["dev"]]


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return canonicalize_name(match.group(1))


def test_the_constraints_name_no_registry() -> None:
    text = CONSTRAINTS.read_text()
    assert "://" not in text, "constraints.txt names an address (an index or a file URL)"
    assert "file:" not in text
    for line in logical_lines(text):
        option = line.split()[0].split("=", 1)[0]
        assert option not in REGISTRY_OPTIONS, f"constraints.txt names a registry: {line}"


def test_every_declared_dependency_is_pinned_exactly_with_hashes() -> None:
    pinned = pins()
    missing = sorted({requirement_name(r) for r in declared()} - set(pinned))
    assert not missing, (f"not in constraints.txt: {missing}; run .ci/constraints after "
                         "changing pyproject.toml's dependencies")
    unhashed = sorted(name for name, (_, hashes) in pinned.items() if not hashes)
    assert not unhashed, f"pinned without a hash (pip --require-hashes refuses): {unhashed}"


def test_each_pin_satisfies_what_pyproject_asks() -> None:
    try:
        from packaging.requirements import Requirement
    except ImportError:
        pytest.skip("packaging is not installed")
    pinned = pins()
    wrong = []
    for text in declared():
        requirement = Requirement(text)
        version, _ = pinned.get(canonicalize_name(requirement.name), (None, []))
        if version is None:  # test_every_declared_dependency_is_pinned_... names it
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{requirement.name}=={version} is not {requirement.specifier}")
    assert not wrong, f"{wrong}: run .ci/constraints -P NAME after changing pyproject.toml"


def test_the_wheel_carries_the_opcua_model(tmp_path: Path) -> None:
    """A non-editable install gets mes/opcua_model/printfarm.xml (package data)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    [wheel] = tmp_path.glob("mes-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "mes/opcua_model/printfarm.xml" in names
        assert archive.read("mes/opcua_model/printfarm.xml") == (
            ROOT / "mes" / "opcua_model" / "printfarm.xml").read_bytes()
    assert {"mes/opcua_model/__init__.py", "mes/opcua_model/loader.py",
            "mes/opcua_model/nodesets.py"} <= names
    assert not [n for n in names if n.startswith("opcua_model/")]
