"""The first admin: created by the first leader when the state has none."""

from __future__ import annotations

import hashlib
import logging

from mes.auth.secrets import new_token, token_hash
from mes.service_port import ServicePort
from mes.state.ops import Op

log = logging.getLogger(__name__)

ADMIN_ID = "admin"


async def ensure_admin(node: ServicePort) -> bool:
    """Create the admin and its token unless an admin exists; True if this call did.

    The token is MES_ADMIN_TOKEN when set; otherwise a new one, printed once to this
    node's log (the only place it is ever shown).
    """
    given = node.settings.mes_admin_token
    token = given or new_token()
    digest = token_hash(token)
    args = {"user_id": ADMIN_ID, "name": "admin", "token_name": "bootstrap",
            "token_id": "bootstrap-" + hashlib.sha256(digest.encode()).hexdigest()[:12],
            "token_hash": digest}
    outcome = await node.submit(Op.USER_BOOTSTRAP, args)
    if outcome.error is not None:
        log.error("could not create the first admin: %s", outcome.error["message"])
        return False
    if not outcome.value.get("created"):
        return False
    if given:
        log.warning("created the admin user 'admin' with the token from MES_ADMIN_TOKEN")
    else:
        log.warning("created the admin user 'admin'. Its API token, shown only this once: %s "
                    "(send it as 'Authorization: Bearer <token>'; make other users and "
                    "tokens with it)", token)
    return True
