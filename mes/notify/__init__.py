"""Notifications: the leader sends the deliveries the state machine derived (webhooks, e-mail)."""
