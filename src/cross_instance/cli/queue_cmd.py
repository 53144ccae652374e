"""``pi-xi queue [list|stats]``: the shared work queue from a terminal.

``list`` (also plain ``pi-xi queue``) shows tasks: queued ones in run order, running ones by
lease end, done and failed ones the latest first (``--owner``, ``--state``, ``--limit``; the
shared pool, which holds the tasks of instances that are gone, is ``--owner ""``). ``stats``
shows each instance's share of the queue and its stealing, and every thief's added up.
Looking never creates state. ``--json`` prints what the daemon's ``/v1/queue/tasks`` and
``/v1/queue/stats`` answer. Exit codes: 0 done, 1 store unavailable or without a queue, 2
bad input.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Optional

import typer

from cross_instance.cli.common import config, emit, fail, no_state, open_configured_store
from cross_instance.core.workqueue import ORPHANED, Task, TaskState, total_stealing
from cross_instance.errors import StoreError
from cross_instance.stores.base import CAP_QUEUE, Store

queue_app = typer.Typer(help="The shared work queue: its tasks, and each instance's share "
                             "and stealing.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
OwnerOpt = Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
    "--owner", help='Only the tasks of this instance (--owner "" : the shared pool).')]


class StateChoice(StrEnum):  # core.workqueue.STATES
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


StateOpt = Annotated[Optional[StateChoice], typer.Option(  # noqa: UP045 - typer needs Optional
    "--state", case_sensitive=False, help="Only tasks in this state.")]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=100_000,
                                       help="At most this many tasks.")]
POOL = "(pool)"


def _cell(text: str, width: int) -> str:
    """A name in one table cell: what does not print escaped (a name may hold tabs or line
    breaks), cut to ``width`` with an ellipsis."""
    shown = "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def _open() -> tuple[Store | None, str]:
    """The configured store (None: no state here yet) and where that is."""
    cfg = config()
    store = open_configured_store(cfg)
    if store is not None and CAP_QUEUE not in store.capabilities:
        where = store.url
        store.close()
        fail(f"the store at {where} keeps no work queue (an older version serves it?)", 1)
    return store, str(cfg.runtime_dir)


def _list(owner: str | None, choice: StateChoice | None, limit: int, as_json: bool) -> None:
    state: TaskState | None = None if choice is None else choice.value
    store, where = _open()
    tasks: list[Task] = []
    now = 0
    if store is not None:
        try:
            tasks = store.list_tasks(owner, state, limit)
            now = store.now_ns()
        except StoreError as err:
            fail(str(err), 1)
        finally:
            store.close()
    if as_json:
        emit({"tasks": [t.to_json() for t in tasks]}, True, "")
        return
    if store is None:
        typer.echo(no_state(where))
        return
    if not tasks:
        typer.echo("No tasks." if owner is None and state is None else "No such tasks.")
        return
    lines = [f"{'TASK':<34} {'OWNER':<20} {'TOOL':<16} {'PRIO':>5}  {'STATE':<8} "
             f"{'RUNS':>5}  {'FENCE':>5}  LEASE"]
    for t in tasks:
        lease = "-"
        if t.state == "running" and t.lease_until_ns is not None:
            left = (t.lease_until_ns - now) / 1e9
            lease = f"{left:.1f} s" if left > 0 else "expired"
        lines.append(f"{_cell(t.task_id, 34):<34} "
                     f"{_cell(t.owner, 20) if t.owner != ORPHANED else POOL:<20} "
                     f"{_cell(t.tool_name, 16) or '-':<16} {t.priority:>5}  {t.state:<8} "
                     f"{f'{t.attempts}/{t.max_attempts}':>5}  {t.fence:>5}  {lease}")
    typer.echo("\n".join(lines))


@queue_app.callback(invoke_without_command=True)
def queue(ctx: typer.Context, owner: OwnerOpt = None, state: StateOpt = None,
          limit: LimitOpt = 100, as_json: JsonOpt = False) -> None:
    """Tasks of the shared work queue (= `pi-xi queue list`)."""
    if ctx.invoked_subcommand is None:
        _list(owner, state, limit, as_json)
        return
    names = {"owner": "--owner", "state": "--state", "limit": "--limit", "as_json": "--json"}
    given = [names[p] for p in names  # typed on the command line, whatever the value
             if getattr(ctx.get_parameter_source(p), "name", "") == "COMMANDLINE"]
    if given:  # they would be silently ignored: the subcommand has options of its own
        fail(f"{', '.join(given)} before the subcommand would be ignored: give options after "
             f"it (pi-xi queue {ctx.invoked_subcommand} --help lists its own)", 2)


@queue_app.command("list")
def queue_list(owner: OwnerOpt = None, state: StateOpt = None, limit: LimitOpt = 100,
               as_json: JsonOpt = False) -> None:
    """Tasks: queued in run order, running by lease end, done and failed the latest first."""
    _list(owner, state, limit, as_json)


@queue_app.command("stats")
def queue_stats(as_json: JsonOpt = False) -> None:
    """Per instance: tasks queued, running, done and failed, and its stealing; the total."""
    store, where = _open()
    counts = []
    if store is not None:
        try:
            counts = store.queue_counts()
        except StoreError as err:
            fail(str(err), 1)
        finally:
            store.close()
    total = total_stealing(counts)
    view = {"instances": [c.to_json() for c in counts], "stealing": total.to_json()}
    if as_json or store is None:
        emit(view, as_json, no_state(where))
        return
    if not counts:
        typer.echo("No tasks have been queued.")
        return
    head = (f"{'INSTANCE':<28} {'QUEUED':>7} {'RUNNING':>7} {'DONE':>7} {'FAILED':>7}  "
            f"{'STEAL ATTEMPTS':>14} {'STEALS':>7} {'SUCCESS':>8} {'AVG LATENCY MS':>14}")
    lines = [head]
    for c in [*counts, None]:
        name = "TOTAL" if c is None else (POOL if c.instance_id == ORPHANED
                                         else _cell(c.instance_id, 28))
        nums = ((sum(x.queued for x in counts), sum(x.running for x in counts),
                 sum(x.done for x in counts), sum(x.failed for x in counts))
                if c is None else (c.queued, c.running, c.done, c.failed))
        s = total if c is None else c.stealing
        if c is None:
            lines.append("-" * len(head))
        lines.append(f"{name:<28} {nums[0]:>7} {nums[1]:>7} {nums[2]:>7} {nums[3]:>7}  "
                     f"{s.total_attempts:>14} {s.successful_steals:>7} "
                     f"{s.success_rate:>8.1%} {s.avg_latency_ms:>14.1f}")
    typer.echo("\n".join(lines))
