"""``registry.Lookup``, the callers' policy over a registry, without
sockets: strict round robin, suspects last, the last answer kept while
the registry fails."""

from __future__ import annotations

from nova_rpc_zmq.oslo_driver import registry


class Members(registry.Registry):
    """A registry that answers a fixed list, or fails when told to."""

    name = "fixed"

    def __init__(self, members: list[str]) -> None:
        self.answer = members
        self.failing = False

    def members(self, key: str) -> list[str]:
        if self.failing:
            raise ConnectionError("back end away")
        return list(self.answer)


def firsts(lookup: registry.Lookup, count: int) -> list[str]:
    return [lookup.rotation("k", fresh=True)[0] for _ in range(count)]


def test_strict_round_robin() -> None:
    lookup = registry.Lookup(Members(["a:1", "b:1", "c:1"]))
    assert firsts(lookup, 6) == ["a:1", "b:1", "c:1"] * 2


def test_a_suspect_goes_last_and_the_others_share_its_turns() -> None:
    lookup = registry.Lookup(Members(["a:1", "b:1", "c:1"]))
    lookup.suspect("b:1")
    orders = [lookup.rotation("k", fresh=True) for _ in range(4)]
    assert [o[0] for o in orders] == ["a:1", "c:1", "a:1", "c:1"]
    assert all(o[-1] == "b:1" and len(o) == 3 for o in orders)


def test_only_suspects_are_still_tried() -> None:
    lookup = registry.Lookup(Members(["a:1"]))
    lookup.suspect("a:1")
    assert lookup.rotation("k", fresh=True) == ["a:1"]


def test_the_last_answer_is_kept_while_the_registry_fails() -> None:
    back_end = Members(["a:1", "b:1"])
    lookup = registry.Lookup(back_end)
    assert lookup.members("k") == ["a:1", "b:1"]
    back_end.failing = True
    assert lookup.members("k", fresh=True) == ["a:1", "b:1"]
    assert lookup.members("other", fresh=True) == []
