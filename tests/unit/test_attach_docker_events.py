"""Docker event messages → typed events (the watcher's pure part)."""

from __future__ import annotations

from weaved.integrations.docker_events import ContainerEvent, EventAction, parse_event

CID = "f7bf6a00bff857c29f95480982dacd3b586ea92448b99ce26a204c6ac613c648"


def test_modern_start_die_destroy() -> None:
    start = {
        "status": "start",
        "id": CID,
        "from": "weaved-test/busybox:1",
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": CID, "Attributes": {"image": "weaved-test/busybox:1", "name": "c1"}},
        "scope": "local",
        "time": 1795304244,
        "timeNano": 1795304244123456789,
    }
    assert parse_event(start) == ContainerEvent(EventAction.START, CID, "c1", 1795304244.1234567)
    die = {**start, "Action": "die", "status": "die"}
    die["Actor"] = {"ID": CID, "Attributes": {"name": "c1", "exitCode": "137"}}
    event = parse_event(die)
    assert event is not None and event.action is EventAction.DIE and event.exit_code == 137
    destroy = {**start, "Action": "destroy", "status": "destroy"}
    parsed = parse_event(destroy)
    assert parsed is not None and parsed.action is EventAction.DESTROY


def test_old_flat_form() -> None:
    event = parse_event({"status": "die", "id": CID, "from": "img", "time": 5})
    assert event == ContainerEvent(EventAction.DIE, CID, "", 5.0, None)


def test_other_events_are_ignored() -> None:
    assert parse_event({"Type": "network", "Action": "connect", "Actor": {"ID": "x"}}) is None
    assert (
        parse_event({"Type": "container", "Action": "exec_start: sh", "Actor": {"ID": CID}}) is None
    )
    assert parse_event({"Type": "container", "Action": "start", "Actor": {}}) is None
