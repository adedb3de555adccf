from renderer.catalog.model import Catalog, Instance, Node
from renderer.catalog.guard import CatalogGuard


def instance(port, name="web", node="n"):
    return Instance(f"i{port}", name, "10.0.0.1", port, (), {}, node, "passing")


def catalog(*ports, name="web", extra=()):
    return Catalog([Node("n", "10.0.0.1", {})], [*(instance(p, name) for p in ports), *extra])


def ports(built):
    return sorted(i.port for i in built.instances)


FULL = catalog(*range(1, 21))


def test_first_catalog_and_ordinary_changes_pass_at_once():
    guard = CatalogGuard(grace=30)
    assert guard.offer(None, FULL, reset=False, now=0) is FULL
    smaller = catalog(*range(1, 15))  # 6 of 20 gone: a scale-down, not a loss of state
    assert guard.offer(FULL, smaller, reset=False, now=1) is smaller


def test_index_reset_losing_instances_keeps_them_until_they_return():
    guard = CatalogGuard(grace=30)
    shown = guard.offer(FULL, catalog(), reset=True, now=0)
    assert guard.holding and ports(shown) == list(range(1, 21)), "nothing lost reaches nginx"
    partly = catalog(*range(1, 11))
    shown = guard.offer(shown, partly, reset=False, now=2)
    assert guard.holding and ports(shown) == list(range(1, 21)), "still missing instances: keep them"
    restored = catalog(*range(1, 21))
    assert guard.offer(shown, restored, reset=False, now=3) is restored and not guard.holding


def test_while_holding_additions_and_moves_are_rendered_at_once():
    """A deploy during a Consul outage reaches nginx; only the losses wait."""
    guard = CatalogGuard(grace=30)
    shown = guard.offer(FULL, catalog(), reset=True, now=0)
    deploy = catalog(1, 2, extra=[instance(9000, name="new")])
    shown = guard.offer(shown, deploy, reset=False, now=1)
    assert ports(shown) == [*range(1, 21), 9000] and shown.instances_of("new")
    assert [n.name for n in shown.nodes] == ["n"]


def test_kept_instances_bring_their_node_when_it_is_gone_too():
    guard = CatalogGuard(grace=30)
    on_other = instance(7, node="m")
    before = Catalog([Node("n", "10.0.0.1", {}), Node("m", "10.0.0.2", {})], [instance(1), on_other])
    shown = guard.offer(before, Catalog([], []), reset=True, now=0)
    assert [n.name for n in shown.nodes] == ["m", "n"] and on_other in shown.instances


def test_index_reset_losing_nothing_passes():
    guard = CatalogGuard(grace=30)
    same = catalog(*range(1, 21))
    assert guard.offer(FULL, same, reset=True, now=0) is same


def test_mass_vanishing_without_reset_is_held_then_accepted_after_grace():
    guard = CatalogGuard(grace=30)
    few = catalog(1, 2)
    assert ports(guard.offer(FULL, few, reset=False, now=0)) == list(range(1, 21))
    assert guard.due_in(10) == 20
    assert guard.release(29.9) is None
    assert guard.release(30) is few and not guard.holding and guard.due_in(31) is None


def test_release_takes_the_newest_catalog_seen_during_the_hold():
    guard = CatalogGuard(grace=30)
    shown = guard.offer(FULL, catalog(1), reset=False, now=0)
    newer = catalog(1, 2, 3)
    guard.offer(shown, newer, reset=False, now=5)
    assert guard.release(30) is newer


def test_small_catalogs_are_not_second_guessed():
    guard = CatalogGuard(grace=30, min_instances=10)
    three = catalog(1, 2, 3)
    one = catalog(1)
    assert guard.offer(three, one, reset=False, now=0) is one


def test_grace_zero_disables_the_guard():
    guard = CatalogGuard(grace=0)
    empty = catalog()
    assert guard.offer(FULL, empty, reset=True, now=0) is empty
