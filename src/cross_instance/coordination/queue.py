"""``rt.queue``: a work queue shared by every instance, where idle instances steal queued work
from busy ones and no task is lost when an instance dies (seed 001's queue-state broadcast and
work stealing, with the task itself moving: the original only described someone else's task).

Promises:

- ``put`` queues a task on this instance's queue; ``take`` starts the next one (this
  instance's, or one left by an instance that is gone) under a lease that a background thread
  renews while it runs; ``complete`` / ``fail`` settle it with the run's fencing token, so a
  task is settled once even if it ran twice.
- ``safe_steal_work`` (when this instance is idle and another holds more than ``minQueued``
  queued tasks) moves the best queued task of the busiest instance to this one in one atomic
  store step and starts it; a running task is never stolen.
- A run that lost its lease (the process stalled, the store was unreachable past it or past
  the instance's own lease, the instance was judged dead, the runtime closed) is told:
  ``lost`` is set, ``ensure()`` raises ``TaskLostError``, and ``complete`` / ``fail`` raise
  it; the task went back to the queue (or failed at its attempt bound) for another worker.
- A run is never left running by this process: leaving ``with task:`` by any exception
  (cancellation and ``KeyboardInterrupt`` included) fails it with ``retry=True``, and when
  even that cannot be recorded the run is let go, so its lease ends and the task is queued
  again.
- Every method that reads or writes the store has an asyncio twin (``aput``, ``atake``,
  ``alist``, ...) with the same arguments, running the same code in the runtime's store
  threads.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import inspect
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from cross_instance.core.jsonvalues import to_text
from cross_instance.core.records import Workload
from cross_instance.core.workqueue import (
    OwnerCounts,
    QueueSettings,
    QueueState,
    StealingStats,
    Task,
    TaskState,
    check_json_text,
    steal_candidates,
    steal_victim,
    stealing_summary,
    total_stealing,
)
from cross_instance.errors import CrossInstanceError, InvalidArgument, TaskLostError
from cross_instance.runtime.session import quiet
from cross_instance.runtime.tenure import Tenure
from cross_instance.stores.base import checked_min_queued

if TYPE_CHECKING:
    from cross_instance.runtime.session import Session
    from cross_instance.stores.base import Store

T = TypeVar("T")
P = ParamSpec("P")
LATENCY_WEIGHT = 0.2  # of the newest run in the average run time this instance publishes
MAX_DESCRIBED = 8192  # characters of an exception's message a failed run records
MAX_TOP_N = 10_000


def _described(err: BaseException) -> str:
    """The error a failed run records: the exception's type and message, a long message cut
    and a lone surrogate (a file name that was not UTF-8) kept as its escape, so that
    recording it cannot fail."""
    text = f"{type(err).__name__}: {err}"
    if len(text) > MAX_DESCRIBED:
        text = f"{text[:MAX_DESCRIBED]}... ({len(text) - MAX_DESCRIBED} more characters)"
    return text.encode("utf-8", "backslashreplace").decode()


def _twin(method: Callable[Concatenate[Any, P], T]
          ) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, T]]:
    """The asyncio form of a method of ``Queue`` or ``RunningTask``: the same call, in the
    runtime's store threads. Cancelling the coroutine does not cancel the call (a store step
    cannot be stopped half way): it finishes, and a run it started is given back."""
    name = method.__name__

    async def twin(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> T:
        session: Session = self._session
        bound = getattr(self, name)  # a subclass's override, as the sync form would call
        handoff = _Handoff(session)
        return await _shielded(session.call(handoff.run, lambda: bound(*args, **kwargs)),
                               handoff.cancel)

    functools.update_wrapper(twin, method)
    signature = inspect.signature(method)
    twin.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=f"Coroutine[Any, Any, {signature.return_annotation}]")
    twin.__annotations__ = {**method.__annotations__,
                            "return": twin.__signature__.return_annotation}  # type: ignore[attr-defined]
    twin.__name__ = f"a{name}"
    twin.__qualname__ = f"{method.__qualname__.rpartition('.')[0]}.a{name}"
    twin.__doc__ = f"``{name}`` from a coroutine."
    return twin


async def _shielded(future: asyncio.Future[T],
                    cancelled: Callable[[], None] | None = None) -> T:
    """``future`` (a store call in its thread), which a cancellation of the caller does not
    stop: the call finishes, ``cancelled`` is told, and its outcome is retrieved."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(quiet)
        if cancelled is not None:
            cancelled()
        raise


class _Handoff:
    """A twin's store call and its caller: when the caller was cancelled, whichever of the
    two ends second gives back every run the call started (decided in the store thread too,
    as the event loop may have closed before a callback could run)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._cancelled = self._done = False
        self._result: Any = None

    def run(self, call: Callable[[], T]) -> T:
        """In the store thread: the call, then the give-back if its caller is gone."""
        result = call()
        with self._lock:
            self._done, self._result = True, result
            give_back = self._cancelled
        if give_back:
            _give_back_runs(result)
        return result

    def cancel(self) -> None:
        """In the event loop: the caller was cancelled."""
        with self._lock:
            self._cancelled = True
            result = self._result if self._done else None
        if result is not None:
            try:
                self._session.submit(_give_back_runs, result)
            except (RuntimeError, CrossInstanceError):
                pass  # the runtime closed: its runs are lost, and handed on by the store


def _give_back_runs(result: Any) -> None:
    """Every run in a call's result, given back: its caller never saw it."""
    for run in result if isinstance(result, tuple) else (result,):
        if isinstance(run, RunningTask):
            run._give_back(asyncio.CancelledError(
                "its caller was cancelled before it saw this run"))


def new_task_id() -> str:
    """A new task id: the time first (so ids of one store sort, and index, in the order they
    were made), then 64 random bits."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _seconds(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0.001 <= value <= 86_400:
        raise InvalidArgument(f"{name} must be seconds from 0.001 to 86400, got {value!r}")
    return int(value * 1e9)


class RunningTask:
    """A task this process runs (from ``take`` or a steal). ``payload`` is the task's JSON
    value; ``task`` the store's record as last seen. As a context manager: leaving the block
    normally completes it (with None, unless settled already; ``TaskLostError`` if the run
    lost its task), leaving by an exception fails it with ``retry=True``."""

    def __init__(self, queue: Queue, task: Task, lease_ns: int, sent: float,
                 stolen: bool, tenure: Tenure) -> None:
        self._queue = queue
        self.task = task
        self.lease_ns = lease_ns
        self.stolen = stolen  # taken from another instance's queue
        self.valid_until = sent + lease_ns / 1e9  # monotonic, conservative
        self.started = sent
        self.lost: TaskLostError | None = None
        self.settled: Task | None = None
        self._lock = threading.Lock()
        self._session = queue._session
        self._tenure = tenure  # the registration it was taken under (before the store call)
        self.payload: Any = json.loads(task.payload)

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def tool_name(self) -> str:
        return self.task.tool_name

    @property
    def priority(self) -> int:
        return self.task.priority

    @property
    def attempts(self) -> int:
        return self.task.attempts

    @property
    def fence(self) -> int:
        """The run's fencing token: pass it to what the task writes so a stale run is
        refused."""
        return self.task.fence

    def __repr__(self) -> str:
        state = "lost" if self.lost else self.settled.state if self.settled else "running"
        return f"<RunningTask {self.task_id!r} run {self.fence} {state}>"

    # --- the lease --------------------------------------------------------------------------
    def renew(self) -> bool:
        """Extend the lease from now; False (and ``lost`` set) once the run is over."""
        with self._lock:
            if self.lost is not None or self.settled is not None:
                return False
        gone = self._tenure.gone()
        if gone is not None:
            self._mark_lost(f"{gone}: the task went back to the queue")
            return False
        sent = time.monotonic()
        try:
            task = self._queue._store().renew_task(self.task_id, self.fence, self.lease_ns)
        except CrossInstanceError as err:
            if self._tenure.holds(self.valid_until):
                return True  # not confirmed, but not expired either: try again soon
            self._mark_lost(f"could not be renewed before its lease ended ({err})")
            return False
        with self._lock:
            if self.settled is not None:  # a settle won the race: its answer stands
                return False
            if task is not None and self.lost is None:
                self.task, self.valid_until = task, sent + self.lease_ns / 1e9
                return True
        if task is None:
            self._mark_lost("its lease ended and the task went back to the queue")
        return False

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self.lost is None and self.settled is None:
                self.lost = TaskLostError(self.task_id, self.fence, reason)
        self._queue._forget(self)

    def ensure(self) -> None:
        """Raise ``TaskLostError`` unless this run surely still holds the task (call it before
        each step whose effect must not happen twice). It asks the store only when its
        instance's lease may have ended (a heartbeat); a run whose own lease ended before a
        renewal came through is lost at once."""
        if self.lost is None and self.settled is None:
            self._tenure.ensure(self.valid_until, lambda why: self._mark_lost(
                f"{why}: the task goes back to the queue"))
        if self.lost is not None:
            raise self.lost
        if self.settled is not None:
            raise TaskLostError(self.task_id, self.fence, f"it was settled ({self.settled.state})")

    arenew = _twin(renew)
    aensure = _twin(ensure)

    # --- settling ---------------------------------------------------------------------------
    def complete(self, result: Any = None) -> Task:
        """Record ``result`` (a JSON value) and end the task; ``TaskLostError`` when this run
        no longer holds it."""
        return self._settle("done", to_text("result", result))

    def fail(self, error: Any, *, retry: bool = False) -> Task:
        """End this run with ``error`` (a JSON value): the task fails, or with ``retry`` goes
        back to the queue while it has attempts left."""
        if not isinstance(retry, bool):
            raise InvalidArgument(f"retry must be True or False, got {retry!r}")
        return self._settle("retry" if retry else "failed", to_text("error", error))

    acomplete = _twin(complete)
    afail = _twin(fail)

    def complete_and_take(self, result: Any = None, *, lease: float | None = None
                          ) -> tuple[Task, RunningTask | None]:
        """``complete``, then start the next task of this instance's queue (or the shared
        pool), in one store step: a worker loop's one call per task. The next is None when
        there is none (``rt.queue.next()`` then steals)."""
        text = to_text("result", result)
        lease_ns = self._queue._lease(lease)
        if self.lost is not None:
            raise self.lost
        if self.settled is not None:  # settled here already: taking again would start another
            raise self._settled_already()
        sent, tenure = time.monotonic(), Tenure(self._session)
        task, taken = self._queue._store().settle_and_take(
            self.task_id, self.fence, "done", text, self._queue.instance_id, lease_ns)
        settled = self._settled(task)
        return settled, None if taken is None else self._queue._run(taken, lease_ns, sent,
                                                                    False, tenure)

    acomplete_and_take = _twin(complete_and_take)

    def _settle(self, outcome: Any, text: str) -> Task:
        if self.lost is not None:
            raise self.lost
        return self._settled(self._queue._store().settle_task(self.task_id, self.fence,
                                                              outcome, text))

    def _settled_already(self) -> TaskLostError:
        assert self.settled is not None
        return TaskLostError(self.task_id, self.fence,
                             f"it was settled already ({self.settled.state})")

    def _settled(self, task: Task | None) -> Task:
        """This run after the store's answer to its settle (None: it no longer held it, or
        this run settled it before with another outcome)."""
        if task is None:
            if self.settled is not None:
                raise self._settled_already()
            self._mark_lost("its lease ended before it was settled; another run may hold it")
            if self.lost is None:  # settled meanwhile by another thread of this process
                raise self._settled_already()
            raise self.lost
        with self._lock:  # the store settled it: that stands, whatever was noticed meanwhile
            self.settled, self.task, self.lost = task, task, None
        self._queue._forget(self, time.monotonic() - self.started)
        return task

    def _settle_or_let_go(self, outcome: Any, text: str) -> Task:
        """``_settle`` for a caller that cannot try again (leaving ``with``, ``process_one``):
        when the store does not answer, the run is let go (no more renewals), so its lease
        ends and the task is queued again, and the error is raised."""
        try:
            return self._settle(outcome, text)
        except TaskLostError:
            raise
        except CrossInstanceError as err:
            self._mark_lost(f"its {'result' if outcome == 'done' else 'failure'} could not be "
                            f"recorded ({err}); it goes back to the queue when its lease ends")
            raise

    def __enter__(self) -> RunningTask:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.settled is not None:
            return
        if self.lost is not None:
            if ev is None:
                raise self.lost  # the block's work was not recorded: say so
            return
        if ev is None:
            self._settle_or_let_go("done", "null")
        else:
            self._give_back(ev)

    def _give_back(self, err: BaseException) -> None:
        """After the work raised ``err`` (any exception: a cancellation too): fail this run
        with ``retry=True``, or let it go when even that cannot be recorded; ``err`` stays
        the exception to see."""
        try:
            self._settle_or_let_go("retry", to_text("error", _described(err)))
        except CrossInstanceError:
            pass

    async def __aenter__(self) -> RunningTask:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.settled is not None or self.lost is not None:
            self.__exit__(et, ev, tb)  # no store call
            return
        # shielded: cancelled again while it runs (a timeout, a task group), the exit still
        # settles the run or lets it go in its thread
        await _shielded(self._session.call(self.__exit__, et, ev, tb))

    def _outcome(self) -> Task:
        """The settled task after ``_give_back``, or the reason it could not be settled."""
        if self.settled is not None:
            return self.settled
        assert self.lost is not None
        raise self.lost


class Queue:
    """``rt.queue``: the shared work queue (see the module's promises). ``settings``: the
    config's ``queue`` section (lease, attempts, the stealing threshold)."""

    def __init__(self, session: Session, settings: QueueSettings) -> None:
        self._session = session
        self.settings = settings
        self._running: dict[str, RunningTask] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next_wake = 0.0  # monotonic: when the renewal thread wakes next by itself
        self._renewer: threading.Thread | None = None
        self._avg_ms: float | None = None
        self._published = False

    def _store(self) -> Store:
        return self._session.require_store()

    @property
    def instance_id(self) -> str:
        return self._session.instance_id

    # --- putting and taking -----------------------------------------------------------------
    def put(self, payload: Any, *, tool_name: str = "", priority: int = 0,
            task_id: str | None = None, max_attempts: int | None = None) -> Task:
        """Queue ``payload`` (a JSON value) on this instance's queue; ``task_id`` (default: a
        new random id) makes a resent put queue once. Higher ``priority`` runs first
        (-1000..1000), then the first put."""
        text = to_text("payload", payload)
        self._publish()
        return self._store().put_task(
            self.instance_id, new_task_id() if task_id is None else task_id, tool_name,
            priority, text, self.settings.max_attempts if max_attempts is None
            else max_attempts)

    def take(self, *, lease: float | None = None) -> RunningTask | None:
        """Start the next task of this instance's queue (or one an instance that is gone
        left), or None when there is none."""
        lease_ns = self._lease(lease)
        sent, tenure = time.monotonic(), Tenure(self._session)
        task = self._store().take_task(self.instance_id, lease_ns)
        return None if task is None else self._run(task, lease_ns, sent, False, tenure)

    def safe_steal_work(self, *, lease: float | None = None,
                        min_queued: int | None = None) -> RunningTask | None:
        """When this instance is idle and another holds more than ``min_queued`` queued tasks
        (``should_attempt_work_stealing``), move the best queued task of the busiest one here
        in one atomic step and start it; None otherwise. Every attempt counts in the stats."""
        lease_ns = self._lease(lease)
        least = self._min_queued(min_queued)
        if not self.should_attempt_work_stealing(least):
            return None
        sent, tenure = time.monotonic(), Tenure(self._session)
        task = self._store().steal_task(self.instance_id, lease_ns, least)
        return None if task is None else self._run(task, lease_ns, sent, True, tenure)

    steal_work = safe_steal_work  # the seed's name: stealing is one atomic step here

    def next(self, *, lease: float | None = None) -> RunningTask | None:
        """``take``, else (with ``queue.steal``, the default) ``safe_steal_work``."""
        got = self.take(lease=lease)
        if got is None and self.settings.steal:
            got = self.safe_steal_work(lease=lease)
        return got

    def process_one(self, handler: Callable[[RunningTask], Any], *,
                    lease: float | None = None) -> Task | None:
        """Run the next task (``next``) with ``handler``: its return value completes the task;
        an exception fails this run with ``retry=True`` (the settled task is returned, the
        exception is not raised again; one that is not an ``Exception``, such as
        ``KeyboardInterrupt``, is, after the run is given back). None when there was nothing
        to run. A result that is not a JSON value fails the task (no retry: the handler
        would give it again) and raises ``InvalidArgument``; so does an async handler, which
        belongs to ``aprocess_one``."""
        if inspect.iscoroutinefunction(handler):
            raise InvalidArgument("process_one takes a plain function; give an async handler "
                                  "to aprocess_one")
        running = self.next(lease=lease)
        if running is None:
            return None
        try:
            result = handler(running)
        except BaseException as err:
            running.__exit__(type(err), err, err.__traceback__)
            if not isinstance(err, Exception):
                raise
            return running._outcome()
        return self._handled(running, result)

    def _handled(self, running: RunningTask, result: Any) -> Task:
        """Complete ``running`` with a handler's ``result``, or fail it when it cannot be
        kept. A handler that settled the run itself has its own outcome kept."""
        if running.settled is not None or running.lost is not None:
            return running._outcome()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never run: no "was never awaited" warning
            running._give_back(InvalidArgument("the handler returned an awaitable"))
            raise InvalidArgument("the handler returned an awaitable (an async handler?): "
                                  "give it to aprocess_one")
        try:
            text = to_text("result", result)
            check_json_text("result", text)  # its size too: the store would refuse it
        except InvalidArgument as err:
            with contextlib.suppress(CrossInstanceError):  # let go when it cannot be recorded
                running._settle_or_let_go("failed", to_text(
                    "error", _described(InvalidArgument(
                        f"the handler's result could not be kept: {err}"))))
            raise
        return running._settle_or_let_go("done", text)

    aput = _twin(put)
    atake = _twin(take)
    asafe_steal_work = _twin(safe_steal_work)
    asteal_work = asafe_steal_work
    anext = _twin(next)

    async def aprocess_one(self, handler: Callable[[RunningTask], Awaitable[Any] | Any], *,
                           lease: float | None = None) -> Task | None:
        """``process_one`` from a coroutine; ``handler`` may be async (awaited) or plain
        (called in the event loop's thread)."""
        running = await self.anext(lease=lease)
        if running is None:
            return None
        try:
            result = handler(running)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as err:
            await running.__aexit__(type(err), err, err.__traceback__)
            if not isinstance(err, Exception):
                raise
            return running._outcome()
        return await _shielded(self._session.call(self._handled, running, result))

    # --- broadcast and stealing decisions ---------------------------------------------------
    def get_remote_queue_states(self) -> builtins.list[QueueState]:
        """The queue state of every live instance (this one included): queued and running
        counts from the store, the average run time and orchestrations each published with
        its heartbeat."""
        from cross_instance.hostfacts.identity import verdict

        store = self._store()
        now = store.now_ns()
        counts = {c.instance_id: c for c in store.queue_counts()}
        out = []
        for r in store.list_instances():
            if verdict(r, now).is_dead:
                continue
            c = counts.get(r.instance_id, OwnerCounts(r.instance_id))
            w = r.workload
            out.append(QueueState(r.instance_id, c.queued, c.running, w.avg_latency_ms,
                                  w.active_orchestrations, r.heartbeat_wall_ms,
                                  c.stolen_from_ns // 1_000_000))
        return out

    def broadcast_queue_state(self) -> None:
        """Publish this instance's queue state now (the heartbeat does it every interval)."""
        membership = self._session.require_membership()
        self._publish()
        membership.beat()

    def should_attempt_work_stealing(self, min_queued: int | None = None) -> bool:
        """Idle (nothing queued or running here, nor in this process) while another instance
        has more than ``min_queued`` tasks queued (one read of the store's counts: a dead
        instance's tasks are in the pool by then, which ``take`` draws from)."""
        least = self._min_queued(min_queued)
        if self._running:
            return False
        counts = self._store().queue_counts()
        mine = next((c for c in counts if c.instance_id == self.instance_id), None)
        if mine is not None and (mine.queued or mine.running):
            return False
        return steal_victim(self.instance_id, counts, least) is not None

    def get_work_stealing_candidates(self, top_n: int = 3) -> builtins.list[str]:
        """The busiest live instances worth stealing from, busiest first."""
        if isinstance(top_n, bool) or not isinstance(top_n, int) \
                or not 1 <= top_n <= MAX_TOP_N:
            raise InvalidArgument(f"top_n must be an integer 1..{MAX_TOP_N}, got {top_n!r}")
        return steal_candidates(self.instance_id, self.get_remote_queue_states(), top_n,
                                self.settings.min_queued)

    def find_steal_candidate(self) -> str | None:
        """The instance a steal would take from now, or None."""
        found = self.get_work_stealing_candidates(1)
        return found[0] if found else None

    def get_work_stealing_summary(self) -> dict[str, int]:
        return stealing_summary(self.instance_id, self.get_remote_queue_states(),
                                self.settings.min_queued)

    def get_stealing_stats(self, *, every_instance: bool = False) -> StealingStats:
        """This instance's stealing (or every instance's, added up), kept in the store."""
        counts = self._store().queue_counts()
        if every_instance:
            return total_stealing(counts)
        return next((c.stealing for c in counts if c.instance_id == self.instance_id),
                    StealingStats())

    def reset_stealing_stats(self, *, every_instance: bool = False) -> None:
        self._store().reset_stealing_stats(None if every_instance else self.instance_id)

    def cleanup_queue_states(self) -> builtins.list[str]:
        """Hand the tasks of dead instances to the live ones and queue again the runs whose
        lease ran out (the heartbeat does it every interval); the dead instances' ids."""
        return self._store().reap()

    # --- reading ----------------------------------------------------------------------------
    def get(self, task_id: str) -> Task | None:
        return self._store().get_task(task_id)

    def list(self, *, owner: str | None = None, state: TaskState | None = None,
             limit: int = 100) -> builtins.list[Task]:
        return self._store().list_tasks(owner, state, limit)

    def stats(self) -> builtins.list[OwnerCounts]:
        """Per instance: queued, running, done, failed and its stealing."""
        return self._store().queue_counts()

    aget_remote_queue_states = _twin(get_remote_queue_states)
    abroadcast_queue_state = _twin(broadcast_queue_state)
    ashould_attempt_work_stealing = _twin(should_attempt_work_stealing)
    aget_work_stealing_candidates = _twin(get_work_stealing_candidates)
    afind_steal_candidate = _twin(find_steal_candidate)
    aget_work_stealing_summary = _twin(get_work_stealing_summary)
    aget_stealing_stats = _twin(get_stealing_stats)
    areset_stealing_stats = _twin(reset_stealing_stats)
    acleanup_queue_states = _twin(cleanup_queue_states)
    aget = _twin(get)
    alist = _twin(list)
    astats = _twin(stats)

    def close(self) -> None:
        """The runtime is closing: every run of this process is lost (its instance leaves,
        and the store hands its tasks to the others)."""
        with self._lock:
            runs = builtins.list(self._running.values())
        for run in runs:
            run._mark_lost("this runtime closed: the task went back to the queue")

    # --- runs and their renewal -------------------------------------------------------------
    def _min_queued(self, value: int | None) -> int:
        return self.settings.min_queued if value is None else checked_min_queued(value)

    def _lease(self, lease: float | None) -> int:
        return self.settings.lease_ms * 1_000_000 if lease is None else _seconds("lease", lease)

    def _run(self, task: Task, lease_ns: int, sent: float, stolen: bool,
             tenure: Tenure) -> RunningTask:
        running = RunningTask(self, task, lease_ns, sent, stolen, tenure)
        with self._lock:
            self._running[task.task_id] = running
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_all, daemon=True,
                                                 name="pi-xi-task-leases")
                self._renewer.start()
            # wake the renewal thread only if it sleeps past this run's first renewal (a
            # wake-up per take is a thread switch, felt on 2 cores); awake, it sees the run
            # before it sleeps again
            if time.monotonic() + lease_ns / 3e9 < self._next_wake:
                self._wake.set()
        self._publish()
        return running

    def _forget(self, running: RunningTask, took_s: float | None = None) -> None:
        with self._lock:
            if self._running.get(running.task_id) is running:
                del self._running[running.task_id]
            if took_s is not None:
                ms = took_s * 1000
                self._avg_ms = ms if self._avg_ms is None else \
                    self._avg_ms + LATENCY_WEIGHT * (ms - self._avg_ms)

    def _renew_all(self) -> None:
        """One thread renews every run of this process, each every third of its lease."""
        while not self._session.closed:
            with self._lock:
                runs = builtins.list(self._running.values())
            now = time.monotonic()
            for run in runs:
                if run.valid_until - now <= run.lease_ns / 1e9 * 2 / 3:
                    run.renew()
            with self._lock:  # the runs now, a run taken meanwhile included
                seconds = min((r.lease_ns / 3e9 for r in self._running.values()),
                              default=1.0)
                seconds = max(0.001, min(seconds, 1.0))
                self._wake.clear()
                self._next_wake = time.monotonic() + seconds
            self._wake.wait(seconds)

    def _publish(self) -> None:
        """Have the heartbeat publish this instance's queue state (once per runtime)."""
        if self._published:
            return
        membership = self._session.membership
        if membership is not None:
            membership.workload_source = self._workload
            self._published = True

    def _workload(self) -> Workload:
        """The queue state the heartbeat publishes: queued here (from the store), the average
        run time here, and the orchestrations set with ``rt.instances.set_workload`` (else
        the runs in this process)."""
        mine = next((c for c in self._store().queue_counts()
                     if c.instance_id == self.instance_id), OwnerCounts(self.instance_id))
        membership = self._session.membership
        given = membership.workload if membership is not None else None
        orch = given.active_orchestrations if given is not None else len(self._running)
        return Workload(mine.queued, self._avg_ms, orch)
