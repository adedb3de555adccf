from renderer.catalog import Catalog, Instance
from renderer.guard import CatalogGuard


def catalog(*ports, name="web"):
    return Catalog([], [Instance(f"i{p}", name, "10.0.0.1", p, (), {}, "n", "passing") for p in ports])


FULL = catalog(*range(1, 21))


def test_first_catalog_and_ordinary_changes_pass_at_once():
    guard = CatalogGuard(grace=30)
    assert guard.offer(None, FULL, reset=False, now=0) is FULL
    smaller = catalog(*range(1, 15))  # 6 of 20 gone: a scale-down, not a loss of state
    assert guard.offer(FULL, smaller, reset=False, now=1) is smaller


def test_index_reset_losing_instances_is_held_until_they_return():
    guard = CatalogGuard(grace=30)
    empty = catalog()
    assert guard.offer(FULL, empty, reset=True, now=0) is None and guard.holding
    partly = catalog(*range(1, 11))
    assert guard.offer(FULL, partly, reset=False, now=2) is None, "still missing instances: keep holding"
    restored = catalog(*range(1, 21))
    assert guard.offer(FULL, restored, reset=False, now=3) is restored and not guard.holding


def test_index_reset_losing_nothing_passes():
    guard = CatalogGuard(grace=30)
    same = catalog(*range(1, 21))
    assert guard.offer(FULL, same, reset=True, now=0) is same


def test_mass_vanishing_without_reset_is_held_then_accepted_after_grace():
    guard = CatalogGuard(grace=30)
    few = catalog(1, 2)
    assert guard.offer(FULL, few, reset=False, now=0) is None
    assert guard.due_in(10) == 20
    assert guard.release(29.9) is None
    assert guard.release(30) is few and not guard.holding and guard.due_in(31) is None


def test_small_catalogs_are_not_second_guessed():
    guard = CatalogGuard(grace=30, min_instances=10)
    three = catalog(1, 2, 3)
    one = catalog(1)
    assert guard.offer(three, one, reset=False, now=0) is one


def test_grace_zero_disables_the_guard():
    guard = CatalogGuard(grace=0)
    empty = catalog()
    assert guard.offer(FULL, empty, reset=True, now=0) is empty
