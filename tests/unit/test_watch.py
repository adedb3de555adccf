"""The blocking-query loop with a scripted fetch: indexes, resets, errors."""

import threading

from agentkit.backoff import Backoff
from agentkit.errors import ConsulUnavailable
from renderer.catalog.watch import BlockingWatch


def run_script(responses):
    """Feed the watch these responses (index, data) or exceptions; collect deliveries."""
    delivered, asked = [], []
    done = threading.Event()
    script = iter(responses)

    def fetch(index, wait):
        asked.append(index)
        try:
            item = next(script)
        except StopIteration:
            done.set()
            watch.stop_event.wait(5)
            raise ConsulUnavailable("end of script")
        if isinstance(item, Exception):
            raise item
        return item

    watch = BlockingWatch("catalog", fetch, delivered.append, wait=1,
                          backoff=Backoff(initial=0.001, cap=0.001, jitter=0))
    watch.start()
    assert done.wait(5)
    watch.stop()
    return [u for u in delivered if u.error != "end of script"], asked


def test_unchanged_index_delivers_nothing_and_next_query_sends_last_index():
    delivered, asked = run_script([(5, "a"), (5, "a"), (7, "b")])
    assert [(u.index, u.data) for u in delivered] == [(5, "a"), (7, "b")]
    assert asked[:3] == [0, 5, 5]


def test_index_going_backwards_is_a_reset():
    delivered, _ = run_script([(50, "a"), (3, "fresh")])
    assert delivered[1].reset and delivered[1].data == "fresh"


def test_errors_are_delivered_and_the_loop_goes_on():
    delivered, _ = run_script([ConsulUnavailable("cannot reach Consul at x"), (2, "back")])
    assert delivered[0].error == "cannot reach Consul at x"
    assert delivered[1].data == "back"


def test_backoff_is_capped_and_resets():
    backoff = Backoff(initial=1, cap=4, jitter=0)
    assert [backoff.next() for _ in range(5)] == [1, 2, 4, 4, 4]
    backoff.reset()
    assert backoff.next() == 1


def test_after_an_error_the_next_query_does_not_block():
    _, asked = run_script([(40, "a"), ConsulUnavailable("down"), (3, "restarted empty"), (4, "b")])
    assert asked[:4] == [0, 40, 0, 3]
