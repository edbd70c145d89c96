"""Authentication: API tokens, passwords, OpenID Connect, and who is asking."""
