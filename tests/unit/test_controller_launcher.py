"""The Launcher: launch batches run in a thread of their own, one trial's writes stay in order, and a
failed batch is raised once, in the step thread."""

from __future__ import annotations

import threading
import time

import pytest

from hpo_operator.controller.kube import Launcher


def test_a_step_waits_only_for_the_launches_of_trials_it_writes_for():
    launcher = Launcher()
    release, order = threading.Event(), []

    def batch():
        release.wait(5)
        order.append("launched a")

    launcher.submit({"a"}, batch)
    launcher.wait_for({"b"})  # another trial: no wait
    order.append("wrote b")
    threading.Timer(0.2, release.set).start()
    launcher.wait_for({"a", "b"})
    order.append("wrote a")
    assert order == ["wrote b", "launched a", "wrote a"]
    launcher.close()


def test_batches_run_in_the_order_they_were_planned():
    launcher = Launcher()
    done = []
    for i in range(5):
        launcher.submit({f"t{i}"}, lambda i=i: (time.sleep(0.01 * (5 - i)), done.append(i)))
    launcher.drain()
    assert done == [0, 1, 2, 3, 4]
    launcher.close()


def test_a_failed_batch_is_raised_once_by_the_next_wait_and_later_batches_still_run():
    launcher = Launcher()
    ran = []

    def failing():
        raise RuntimeError("pod create refused")

    launcher.submit({"a"}, failing)
    launcher.submit({"b"}, lambda: ran.append("b"))
    with pytest.raises(RuntimeError, match="pod create refused"):
        launcher.drain()
    launcher.drain()  # raised once
    assert ran == ["b"]
    launcher.close()


def test_an_inline_launcher_runs_each_batch_at_once():
    launcher = Launcher(inline=True)
    ran = []
    launcher.submit({"a"}, lambda: ran.append("a"))
    assert ran == ["a"]
