import pytest

from renderer.quiescence import Quiescence, Wait


def test_without_wait_a_change_is_due_at_once():
    q = Quiescence(None)
    assert q.due_in(0) is None
    q.changed(10)
    assert q.due_in(10) == 0


def test_quiet_period_restarts_with_each_change_until_max():
    q = Quiescence(Wait(1.0, 3.0))
    q.changed(0.0)
    assert q.due_in(0.5) == pytest.approx(0.5)
    q.changed(0.9)
    assert q.due_in(1.0) == pytest.approx(0.9)         # quiet until 1.9
    for t in (1.8, 2.7):
        q.changed(t)
    assert q.due_in(2.8) == pytest.approx(0.2)         # capped at first + max = 3.0
    assert q.due_in(3.5) == 0
    q.reset()
    assert q.due_in(4) is None
