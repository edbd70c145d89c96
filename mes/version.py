"""Which release this is and which data formats it reads and writes.

- `RELEASE`: the package version (pyproject.toml), shown by `server --version`,
  `GET /api/v1/cluster` and the OPC UA BuildInfo.
- `DATA_LEVEL`: the newest command format level this code applies. Every command carries
  the level its format was defined at (`v`); release 0.1.0 wrote commands without one, which
  mean level 1. A node refuses (exit status 2) a command of a level above its own: it was
  written by a newer release.
- `SCHEMA`: the schema of the SQLite image in snapshots; `SCHEMA_MIN_READER`: the oldest
  schema whose code can still read an image written now (additive changes keep it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# Level 1: release 0.1.0 (commands without a "v"). Level 2 (0.2.0): node.version,
# cluster.version. Level 3 (0.3.0): user.update ends web sessions on a new password.
# Level 4 (0.4.0): user names and ids never collide; a user prints only files they uploaded.
# Level 5 (0.5.0): no command changed; every node answers Raft pre-votes, so nodes ask for
# them once the cluster is at this level (mes.raft.pre_vote). Level 6 (0.6.0): printers of
# api Moonraker; nodes announce their OPC UA endpoint. Level 7 (0.7.0): operators reorder
# the queue (job.reorder); an uploader's own name for a file is kept and jobs take it.
DATA_LEVEL = 7
# Schema 1: release 0.1.0. Schema 2: the node_versions and cluster_meta tables. Schema 3:
# file_owners. Schema 4: nodes.opcua_url (older readers ignore the column). Schema 5:
# print_jobs.priority and queue_rank, file_owners.name (the same).
SCHEMA = 5
SCHEMA_MIN_READER = 1
# The day this release was made (the OPC UA BuildInfo's BuildDate).
RELEASE_DATE = "2026-12-07"
# Exit status of a node that finds data written by a newer release.
EXIT_NEWER_DATA = 2


def package_version() -> str:
    """The installed version of mes ("unknown" when run from a tree that is not installed)."""
    try:
        return version("mes")
    except PackageNotFoundError:
        return "unknown"


RELEASE = package_version()
