"""Making users with tokens through the API, for tests of roles and ownership."""

from __future__ import annotations

import httpx

from tests.auth import bearer


async def make_user(api: httpx.AsyncClient, user_id: str, role: str = "user",
                    **extra: str) -> dict[str, str]:
    """Create a user (as the admin client `api`) and a token; returns its auth headers."""
    response = await api.post("/api/v1/users", json={"id": user_id, "name": user_id,
                                                     "role": role, **extra})
    assert response.status_code == 201, response.text
    response = await api.post("/api/v1/tokens", json={"name": "test", "user_id": user_id})
    assert response.status_code == 201, response.text
    return bearer(response.json()["token"])
