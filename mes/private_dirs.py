"""DATA_DIR and UPLOAD_PATH hold printer keys, password hashes and every G-code file: they
are the node's alone (directories 0700; files the node creates 0600 through its umask)."""

from __future__ import annotations

import os
from pathlib import Path

# The process umask of a server: files and directories it creates are its user's only.
PRIVATE_UMASK = 0o077


def make_private(*directories: Path) -> None:
    """Create each directory (and parents) and make it 0700, whatever it was."""
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)


def private_files() -> None:
    """Make every file this process creates from now on 0600 (and directories 0700)."""
    os.umask(PRIVATE_UMASK)
