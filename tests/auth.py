"""The admin token every test server is started with, and headers carrying it."""

from __future__ import annotations

# Passed to servers as MES_ADMIN_TOKEN: the bootstrap admin's token.
ADMIN_TOKEN = "mes_test-admin-token-0123456789abcdefghijklmnopqrstuvwxyz"


def bearer(token: str) -> dict[str, str]:
    """An Authorization header carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


def admin_headers() -> dict[str, str]:
    """Headers that authenticate as the bootstrap admin."""
    return bearer(ADMIN_TOKEN)
