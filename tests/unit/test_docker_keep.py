"""Addresses kept for --restart=always containers across a dockerd restart (pure part)."""

from __future__ import annotations

from weaved.docker.keep import Keeper, Kept


def test_kept_only_for_restarting_containers_taken_by_pool_then_given_back() -> None:
    keeper = Keeper()
    keeper.seen({"10.32.0.3": "c-always"})
    assert keeper.keeps("10.32.0.3/12") == "c-always"
    assert keeper.keeps("10.32.0.2") is None  # no restart policy: released as usual
    keeper.keep(Kept("weave-a", "_docker-1", "10.32.0.3/12", "c-always"))
    keeper.keep(Kept("weave-b", "_docker-2", "10.32.5.3/24", "c-other"))
    assert keeper.take("weave-x") is None
    taken = keeper.take("weave-a")
    assert taken is not None and taken.address == "10.32.0.3/12"
    assert [k.ident for k in keeper.give_back()] == ["_docker-2"]
    assert keeper.kept == []


def test_kept_round_trips_and_garbage_is_ignored() -> None:
    keeper = Keeper()
    keeper.keep(Kept("weave-a", "_docker-1", "10.32.0.3/12", "c"))
    assert Keeper.kept_from_json(keeper.to_json()) == keeper.kept
    assert Keeper.kept_from_json("nonsense") == []
    assert Keeper.kept_from_json([{"pool_id": "x"}, 3]) == []
