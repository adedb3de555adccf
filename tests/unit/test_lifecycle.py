"""The stop path both daemons share: safe in a signal handler, and every waiter learns of it."""

import os
import queue
import signal
import threading

import pytest

from agentkit.lifecycle import Lifecycle, Stopping


def test_a_stop_requested_while_the_loop_holds_the_event_lock_does_not_deadlock():
    # A handler runs between two bytecodes of the main thread, possibly inside Event.wait with its
    # condition's (non-reentrant) lock held. Simulate exactly that: hold the lock, then stop.
    lifecycle = Lifecycle()
    woken: queue.SimpleQueue = queue.SimpleQueue()
    lifecycle.on_stop(lambda: woken.put("stop"))
    done = threading.Event()

    def interrupted_loop():
        with lifecycle.stop_event._cond:  # what Event.wait holds while it checks the flag
            lifecycle.request_stop("received SIGTERM")
        done.set()

    thread = threading.Thread(target=interrupted_loop, daemon=True)
    thread.start()
    assert done.wait(5), "request_stop blocked on a lock its caller holds"
    assert woken.get(timeout=1) == "stop"
    with pytest.raises(Stopping):
        lifecycle.check()
    assert lifecycle.stop_event.is_set(), "threads waiting on the event learn of the stop"
    assert lifecycle.stop_reason == "received SIGTERM"


def test_the_installed_handler_names_the_signal_and_wakes_the_loop():
    lifecycle = Lifecycle()
    woken: queue.SimpleQueue = queue.SimpleQueue()
    lifecycle.on_stop(lambda: woken.put("stop"))
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        lifecycle.stop_on(signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert woken.get(timeout=5) == "stop"
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert lifecycle.stopping and lifecycle.stop_reason == "received SIGUSR2"


def test_a_wait_slice_returns_once_stopped():
    lifecycle = Lifecycle()
    lifecycle.request_stop()
    with pytest.raises(Stopping):
        lifecycle.sleep(60)
