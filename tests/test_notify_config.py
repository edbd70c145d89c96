"""Settings of events, webhooks and e-mail: checked at start, secrets masked."""

from __future__ import annotations

import pytest

from mes.config import ConfigError, load_settings, masked_items


def test_smtp_url_and_webhook_networks_are_checked(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="SMTP_URL"):
        load_settings(_env_file=None, data_dir=tmp_path, smtp_url="http://mail.example")
    with pytest.raises(ConfigError, match="WEBHOOK_NETWORKS"):
        load_settings(_env_file=None, data_dir=tmp_path, webhook_networks="10.0.0/33")
    settings = load_settings(_env_file=None, data_dir=tmp_path,
                             smtp_url="smtps://bob:hunter2@mail.example",
                             webhook_networks="10.0.0.0/8, 192.168.1.0/24")
    assert len(settings.webhook_network_list) == 2
    shown = dict(masked_items(settings))
    assert shown["SMTP_URL"] == "smtps://bob:***@mail.example"
    assert "hunter2" not in str(shown)
