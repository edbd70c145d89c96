"""Authentication helpers: OpenID Connect bearer-token verification."""
