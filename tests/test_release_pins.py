"""A change of a command, a table or a snapshot moves the release: the shape of each
release's data is pinned here, so that changing it without a new version (and, where old
data needs one, a migration or an old format kept) fails this test with what to do."""

from __future__ import annotations

import hashlib
import json

from mes.state.commands import COMMANDS
from mes.state.migrations import MIGRATIONS
from mes.state.tables import metadata
from mes.version import DATA_LEVEL, RELEASE, SCHEMA, SCHEMA_MIN_READER

# release -> fingerprint of its data's shape. Add a line for a new release; never edit one.
PINNED = {
    "0.2.0": "2ef7971c3b5086dfe21422ed6d09a2da",
    "0.3.0": "6505e27acd39226b5ef4e825e3895ec5",
    "0.4.0": "e072c586685a64ffae687380e9fdeaf9",
    "0.5.0": "b43d8d4627ade2a1bb2cec741c0bced0",
    "0.6.0": "48ac5012303450503f3e3c7659f828bb",
    "0.7.0": "df27e458fc74461e714ca16b1fa18617",
}


def data_shape() -> dict[str, object]:
    tables = {t.name: [(c.name, str(c.type), bool(c.nullable), bool(c.primary_key))
                       for c in t.columns] for t in metadata.sorted_tables}
    formats = {op: sorted(c.formats) for op, c in COMMANDS.items()}
    return {"tables": tables, "formats": formats, "level": DATA_LEVEL, "schema": SCHEMA,
            "min_reader": SCHEMA_MIN_READER, "migrations": sorted(MIGRATIONS)}


def fingerprint() -> str:
    text = json.dumps(data_shape(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def test_the_shape_of_the_data_is_the_one_pinned_for_this_release() -> None:
    assert RELEASE in PINNED, (
        f"release {RELEASE} has no pinned data shape: add {RELEASE!r}: {fingerprint()!r} "
        "to PINNED (and a CHANGELOG entry)")
    assert PINNED[RELEASE] == fingerprint(), (
        f"commands or tables changed but the release is still {RELEASE}: raise the version "
        "in pyproject.toml, give changed commands a new format level (keeping the old "
        "format's handler), add a migration for changed tables (SCHEMA, mes/state/"
        f"migrations.py), write the CHANGELOG, and pin the new release: {fingerprint()!r}")


def test_every_schema_below_this_one_has_a_migration() -> None:
    assert sorted(MIGRATIONS) == list(range(SCHEMA))
    assert 1 <= SCHEMA_MIN_READER <= SCHEMA
