"""``pi-xi events``: the shared event log in the terminal (instances connected and
disconnected, usage warnings, 429s, cooldowns, learned limits, workflow claims, lost locks).

Without ``--after`` it shows the newest ``--limit`` events; with ``--after ID`` those after
that id. ``--follow`` then keeps printing new ones as they are written, until Ctrl-C (exit 0).
One line per event: readable text by default, one JSON object with ``--json`` (the fields of
``core.events.event_json``). Looking never creates state: with no state yet it says so.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from cross_instance.cli.common import config, fail, no_state, open_configured_store
from cross_instance.core.events import event_json
from cross_instance.core.records import Event
from cross_instance.errors import StoreError

FollowOpt = Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing new events until Ctrl-C.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
AfterOpt = Annotated[Optional[int], typer.Option(  # noqa: UP045 - typer needs Optional
    "--after", min=0, help="Only events with a larger id (0: from the oldest kept).")]
LimitOpt = Annotated[int, typer.Option(
    "--limit", min=1, max=10_000, help="At most this many events (before following).")]
PollOpt = Annotated[float, typer.Option(
    "--poll", min=0.05, max=60, help="Seconds between reads while following.")]


def _value(value: object) -> str:
    """A data value on one line: plain words as they are, any other text quoted as JSON (a
    name may hold spaces, ``=``, quotes or line separators), with every character that does
    not print escaped; numbers and the rest as JSON."""
    if isinstance(value, str) and value and all(
            c.isprintable() and not c.isspace() and c not in '="\\' for c in value):
        return value
    text = json.dumps(value, ensure_ascii=False)
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def render_event(event: Event) -> str:
    """``2026-02-25 02:00:01  #42  rate_limited  analyzer-1  bucket=r:openai ...``: time,
    id, kind, instance, then the data sorted by key (those that are null left out)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.wall_ms / 1000))
    who = "-" if event.instance_id is None else _value(event.instance_id)
    data = " ".join(f"{_value(k)}={_value(v)}" for k, v in sorted(event.data.items())
                    if v is not None)  # unknown values (no model, no hint) left out
    return f"{stamp}  #{event.event_id}  {event.kind}  {who}  {data}".rstrip()


def events_command(follow: FollowOpt = False, as_json: JsonOpt = False, after: AfterOpt = None,
                   limit: LimitOpt = 20, poll: PollOpt = 0.5) -> None:
    """The shared event log: instances, usage warnings, 429s, cooldowns, claims, locks."""
    from cross_instance.coordination.events import Cursor, last_events

    cfg = config()
    store = open_configured_store(cfg)
    if store is None:  # as `pi-xi status`: nothing has happened here, which is no error
        typer.echo(no_state(cfg.runtime_dir), err=True)
        return

    def show(event: Event) -> None:
        typer.echo(json.dumps(event_json(event), sort_keys=True)
                   if as_json else render_event(event))

    try:
        if after is None:
            shown = last_events(store, limit)
            cursor = Cursor(store, shown[-1].event_id if shown else 0)
        else:
            shown = store.events(after, limit)
            cursor = Cursor(store, shown[-1].event_id if shown else after)
        for event in shown:
            show(event)
        while follow:
            events = cursor.fetch()
            for event in events:
                show(event)
            if cursor.caught_up(events):
                time.sleep(poll)
    except KeyboardInterrupt:
        return  # Ctrl-C ends --follow: what the user asked for, not an error
    except StoreError as err:
        fail(str(err), 1)
    finally:
        store.close()
