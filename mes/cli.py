"""Console scripts: `server` starts a node, `setting` prints the effective configuration."""

from __future__ import annotations

import logging
import sys

from mes.config import ConfigError, Settings, load_settings, masked_items

EXIT_BAD_CONFIG = 2


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"mes: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def setting() -> None:
    """Print NAME=value for every setting, secrets masked."""
    for name, value in masked_items(_settings_or_exit()):
        print(f"{name}={value}")


def server() -> None:
    """Run one node: Raft, state machine and REST API until SIGINT or SIGTERM."""
    settings = _settings_or_exit()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from mes.api.app import create_app
    from mes.node import FarmNode

    try:
        node = FarmNode(settings)
    except Exception as exc:  # the Raft port is taken, the data dir is unusable, ...
        print(f"mes: cannot start node: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        uvicorn.run(create_app(node), host=settings.http_host, port=settings.http_port,
                    log_level=settings.log_level.lower(), access_log=False)
    finally:
        node.close()
