"""The release that last ran on a DATA_DIR, recorded in it, so that an older release refuses
the directory before it reads anything (a downgrade) instead of misreading it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mes.raft.journal import write_durably
from mes.state.errors import NewerData
from mes.version import DATA_LEVEL, RELEASE, SCHEMA

FILE_NAME = "mes-version.json"


def read_mark(data_dir: Path) -> dict[str, Any] | None:
    """What the last release to run on `data_dir` recorded (None: release 0.1.0, or new)."""
    try:
        data = json.loads((data_dir / FILE_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise NewerData(f"{data_dir / FILE_NAME} is unreadable ({exc}); refusing to start on "
                        "a data directory of unknown version") from None
    return data if isinstance(data, dict) else {}


def check_and_mark(data_dir: Path) -> None:
    """Refuse a data directory a newer release wrote (NewerData), else record this release."""
    mark = read_mark(data_dir)
    if mark is not None:
        level, schema = mark.get("level"), mark.get("schema")
        if (not isinstance(level, int) or not isinstance(schema, int)
                or level > DATA_LEVEL or schema > SCHEMA):
            raise NewerData(
                f"{data_dir} was written by release {mark.get('release', '?')} (data level "
                f"{level}, schema {schema}); this is release {RELEASE} (level {DATA_LEVEL}, "
                f"schema {SCHEMA}), which cannot read it. Run that release or a newer one, or "
                "restore a backup taken before the upgrade")
    data_dir.mkdir(parents=True, exist_ok=True)
    write_durably(str(data_dir / FILE_NAME), json.dumps(
        {"release": RELEASE, "level": DATA_LEVEL, "schema": SCHEMA}).encode())
