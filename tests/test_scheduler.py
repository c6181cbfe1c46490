"""The local farm's scheduler on its own, and a worker thread that fails, driven through the real farm.

Plain Python: no Blender process starts. The scheduler's tasks are real datums of
a real repo layout; the failing worker is a real ``LocalFarm`` slot whose process
cannot start because its Blender path holds a NUL byte, which ``subprocess``
refuses with ``ValueError`` (not ``OSError``) in the slot's own thread.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from farm_pipelines.datums import Datum, DatumInput
from farm_pipelines.errors import FarmFailure
from farm_pipelines.host import Host
from farm_pipelines.job import Job, JobSettings
from farm_pipelines.local.farm import LocalFarm
from farm_pipelines.local.scheduler import Scheduler, Task

WAIT = 10.0  # seconds a thread that should finish at once gets before the test calls it hung


def tasks(*names: str) -> list[Task]:
    return [Task(Datum((DatumInput("splitter", "splitter", f"/job/tiles/{name}.json"),)), name) for name in names]


def taking(scheduler: Scheduler) -> tuple[threading.Thread, list[Task | None]]:
    """A worker blocked in ``take()``, as a slot's NextDatum handler waits for its next datum."""
    got: list[Task | None] = []
    thread = threading.Thread(target=lambda: got.append(scheduler.take()), daemon=True)
    thread.start()
    return thread, got


def still_waiting(thread: threading.Thread) -> bool:
    thread.join(0.3)
    return thread.is_alive()


def test_tasks_go_out_one_at_a_time_in_order_and_the_stage_drains():
    scheduler = Scheduler(tries=3)
    assert not scheduler.drained()  # not fed yet: workers started early wait for the stage
    a, b = tasks("a", "b")
    scheduler.feed([a, b])
    assert scheduler.take() is a
    assert scheduler.take() is b
    assert not scheduler.drained()  # both in flight
    assert scheduler.finish(a, None) and scheduler.finish(b, None)
    assert scheduler.drained() and scheduler.take() is None and scheduler.failed == {}


def test_an_empty_stage_is_drained_once_fed():
    scheduler = Scheduler(tries=3)
    scheduler.feed([])
    assert scheduler.drained() and scheduler.take() is None


def test_requeue_puts_the_task_first_and_costs_no_attempt():
    scheduler = Scheduler(tries=1)
    a, b = tasks("a", "b")
    scheduler.feed([a, b])
    assert scheduler.take() is a
    scheduler.requeue(a)  # taken for a process that died before it started the datum
    assert (a.attempts, a.errors) == (0, [])
    assert scheduler.take() is a  # ahead of b
    assert scheduler.finish(a, None)
    assert scheduler.take() is b


def test_a_failed_attempt_goes_to_the_back_until_its_tries_run_out():
    scheduler = Scheduler(tries=2)
    a, b = tasks("a", "b")
    scheduler.feed([a, b])
    assert scheduler.take() is a
    assert not scheduler.finish(a, "first error")  # not settled: retried after b
    assert scheduler.take() is b
    assert scheduler.finish(b, None)
    assert scheduler.take() is a
    assert scheduler.finish(a, "second error")  # out of tries: settled as failed
    assert (a.attempts, a.errors) == (2, ["first error", "second error"])
    assert scheduler.failed == {a.datum.key(): "second error"}
    assert scheduler.drained() and scheduler.take() is None


def test_take_waits_for_a_task_in_flight_that_may_come_back():
    scheduler = Scheduler(tries=2)
    (a,) = tasks("a")
    scheduler.feed([a])
    assert scheduler.take() is a
    waiter, got = taking(scheduler)
    assert still_waiting(waiter)  # a may fail and need a worker again
    scheduler.finish(a, "died")
    waiter.join(WAIT)
    assert got == [a]
    scheduler.finish(a, None)
    waiter, got = taking(scheduler)
    waiter.join(WAIT)
    assert got == [None] and scheduler.failed == {}


def test_fail_all_fails_the_queue_and_leaves_tasks_in_flight_to_their_workers():
    scheduler = Scheduler(tries=3)
    a, b, c = tasks("a", "b", "c")
    scheduler.feed([a, b, c])
    assert scheduler.take() is a
    scheduler.fail_all("cannot write the farm's state")
    assert scheduler.failed == {b.datum.key(): "cannot write the farm's state",
                                c.datum.key(): "cannot write the farm's state"}
    assert not scheduler.drained()  # a is still being worked on
    assert scheduler.finish(a, None)
    assert scheduler.drained() and a.datum.key() not in scheduler.failed


def test_cancel_releases_waiting_workers_and_drains():
    scheduler = Scheduler(tries=3)
    waiter, got = taking(scheduler)  # not fed yet
    assert still_waiting(waiter)
    scheduler.cancel()
    waiter.join(WAIT)
    assert got == [None] and scheduler.drained()
    scheduler.feed(tasks("a"))
    assert scheduler.take() is None  # a cancelled stage hands nothing out


def test_a_task_taken_and_never_settled_keeps_the_other_workers_waiting_until_it_is():
    """Why a worker that gives up must settle what it holds: the others wait on it in take()."""
    scheduler = Scheduler(tries=3)
    a, b = tasks("a", "b")
    scheduler.feed([a, b])
    assert scheduler.take() is a  # the worker that will give up
    assert scheduler.take() is b
    scheduler.finish(b, None)
    waiter, got = taking(scheduler)
    assert still_waiting(waiter)  # a is in flight: this is the hang if nobody settles it
    scheduler.give_up(a, "the worker failed: ValueError: boom")  # what a failing slot does
    waiter.join(WAIT)
    assert got == [None] and scheduler.drained()
    assert scheduler.failed == {a.datum.key(): "the worker failed: ValueError: boom"}


def test_give_up_fails_the_held_task_at_once_and_the_queue():
    scheduler = Scheduler(tries=3)
    a, b, c = tasks("a", "b", "c")
    scheduler.feed([a, b, c])
    assert scheduler.take() is a
    assert scheduler.take() is b
    scheduler.give_up(a, "cannot write the farm's state (No space left on device)")
    assert a.attempts == 1  # not retried: what stopped its worker would stop the next
    assert set(scheduler.failed) == {a.datum.key(), c.datum.key()}
    assert not scheduler.drained()  # b is still with a worker that is alive
    assert scheduler.finish(b, None)
    assert scheduler.drained()
    scheduler.give_up(None, "late")  # a worker holding nothing adds nothing
    assert set(scheduler.failed) == {a.datum.key(), c.datum.key()}


def test_tasks_fed_after_a_worker_gave_up_fail_with_its_reason():
    """A worker may fail before the stage's tasks are fed (its process cannot start): they must
    still fail, and with that worker's reason, not a vaguer one found later."""
    scheduler = Scheduler(tries=3)
    scheduler.give_up(None, "ValueError: embedded null byte")
    a, b = tasks("a", "b")
    scheduler.feed([a, b])
    assert scheduler.failed == {a.datum.key(): "ValueError: embedded null byte",
                                b.datum.key(): "ValueError: embedded null byte"}
    assert scheduler.drained() and scheduler.take() is None
    scheduler.fail_all("no worker was left")  # nothing queued: the first reason stands
    assert set(scheduler.failed.values()) == {"ValueError: embedded null byte"}


def put_job(state: Path, job: str, tiles: int) -> None:
    blends = state / "repos" / "blends" / job / "scene"
    blends.mkdir(parents=True)
    (blends / "scene.blend").write_bytes(b"BLENDER-v500 not opened: no process starts")
    for index in range(tiles):
        tile = state / "repos" / "splitter" / job / "tiles" / f"000001_{index:04d}.json"
        tile.parent.mkdir(parents=True, exist_ok=True)
        tile.write_text("{}", encoding="utf-8")


def in_time(call):
    """Run ``call`` in a thread and fail the test, rather than hang it, if it does not return."""
    outcome: list = []

    def target():
        try:
            outcome.append(("returned", call()))
        except BaseException as error:  # noqa: BLE001 (handed to the test thread)
            outcome.append(("raised", error))

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), f"the run hung (still running after {time.monotonic() - started:.0f} s)"
    return outcome[0]


UNSTARTABLE = Host(blender="/opt/blender\0/blender")  # subprocess raises ValueError: embedded null byte


def test_a_worker_thread_raising_fails_every_tile_with_one_line_naming_the_error(tmp_path):
    put_job(tmp_path, "job", tiles=3)
    farm = LocalFarm(tmp_path, workers=2, host=UNSTARTABLE)
    kind, failed = in_time(lambda: farm.run_pipeline("renderer", "job"))
    assert kind == "returned"
    assert len(failed) == 3
    for error in failed.values():
        assert "\n" not in error
        assert error.startswith("the local farm's renderer worker failed: ValueError: embedded null byte")
    logs = list((tmp_path / "logs" / "renderer" / "job").glob("*.log"))
    assert any("Traceback" in log.read_text(encoding="utf-8") for log in logs)  # the detail is in the log
    assert not (tmp_path / "repos" / "renderer" / "job").exists() or not any(
        (tmp_path / "repos" / "renderer" / "job").iterdir())  # nothing was published as rendered


def test_a_run_whose_worker_raises_ends_with_one_farm_failure_line(tmp_path):
    job_files = tmp_path / "job files"
    job_files.mkdir()
    (job_files / "scene.blend").write_bytes(b"BLENDER-v500 not opened: no process starts")
    farm = LocalFarm(tmp_path / "state", workers=2, host=UNSTARTABLE)
    job = Job("job", "job", JobSettings())
    kind, error = in_time(lambda: farm.run(job, job_files, lambda progress: None, threading.Event()))
    assert kind == "raised" and isinstance(error, FarmFailure), error
    message = str(error)
    assert "\n" not in message
    assert message.startswith("splitting failed: the local farm's splitter worker failed: "
                              "ValueError: embedded null byte")


@pytest.fixture(autouse=True)
def _no_stray_threads():
    """Every worker thread a test started has ended when it returns: nothing is left waiting."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.daemon]
        if not left:
            return
        time.sleep(0.05)
    pytest.fail(f"threads still running: {left}")


def test_a_stage_fed_as_it_goes_ends_when_given_up_and_late_tasks_fail_at_once():
    """The merger's scheduler is fed frame by frame. A worker that cannot start gives the stage up:
    the stage is then over for its workers (no restart loop), and what still comes fails at once,
    as does a task that comes after the stage closed; each is reported to ``on_settled``."""
    scheduler = Scheduler(tries=3)
    heard: list[tuple[str, str | None]] = []
    scheduler.on_settled = lambda task, error: heard.append((task.id, error))
    scheduler.add(tasks("a"))
    assert not scheduler.drained()
    scheduler.give_up(None, "worker cannot start: exit code 1")
    assert scheduler.drained() and scheduler.take() is None
    scheduler.add(tasks("b"))
    assert heard == [("a", "worker cannot start: exit code 1"), ("b", "worker cannot start: exit code 1")]

    closed = Scheduler(tries=3)
    closed.on_settled = lambda task, error: heard.append((task.id, error))
    closed.close()
    closed.add(tasks("c"))
    assert heard[-1][0] == "c" and "after its stage had ended" in heard[-1][1]
    assert closed.drained() and set(closed.failed) == {tasks("c")[0].datum.key()}
