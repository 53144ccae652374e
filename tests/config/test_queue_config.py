"""The work queue's settings (issue 18): read and written back, the defaults kept as None
(nothing more is loaded for a config without them), and bad values refused by their key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cross_instance.config import load_config
from cross_instance.core.workqueue import QueueSettings
from cross_instance.errors import ConfigError


def write(base: Path, section: dict[str, Any]) -> None:
    (base / ".pi").mkdir(parents=True, exist_ok=True)
    (base / ".pi" / "config.json").write_text(json.dumps({"crossInstance": section}))


def test_the_queue_section_round_trips_and_defaults_are_none(tmp_path: Path) -> None:
    assert load_config(tmp_path, {}).queue is None
    assert load_config(tmp_path, {}).queue_settings() == QueueSettings()
    given = {"leaseMs": 5000, "maxAttempts": 7, "minQueued": 0, "steal": False}
    write(tmp_path, {"queue": given})
    cfg = load_config(tmp_path, {})
    assert cfg.queue == QueueSettings(5000, 7, 0, False)
    assert cfg.to_json()["queue"] == given


@pytest.mark.parametrize(("queue", "key"), [
    ({"leaseMs": 50}, "crossInstance.queue.leaseMs"),
    ({"leaseMs": 86_400_001}, "crossInstance.queue.leaseMs"),
    ({"maxAttempts": 0}, "crossInstance.queue.maxAttempts"),
    ({"minQueued": -1}, "crossInstance.queue.minQueued"),
    ({"steal": "yes"}, "crossInstance.queue.steal"),
    ({"leaseMs": 1000.5}, "crossInstance.queue.leaseMs"),
    ({"lease": 1000}, "crossInstance.queue.lease"),
])
def test_bad_queue_settings_are_refused_by_key(tmp_path: Path, queue: dict[str, Any],
                                               key: str) -> None:
    write(tmp_path, {"queue": queue})
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, {})
    assert caught.value.key == key
