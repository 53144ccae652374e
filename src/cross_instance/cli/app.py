"""``pi-xi``: status, limits, workflows, locks, the work queue, store recovery and the demo.
Errors are one line on stderr, exit code 2 for bad input (config, arguments) and 1 for an
unavailable or damaged state store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cross_instance.cli.common import config as _config
from cross_instance.cli.common import emit as _emit
from cross_instance.cli.common import fail as _fail
from cross_instance.cli.common import no_state, open_configured_store
from cross_instance.cli.events_cmd import events_command
from cross_instance.cli.ownership_cmds import locks_app, workflow_app
from cross_instance.cli.queue_cmd import queue_app
from cross_instance.cli.serve_cmd import serve
from cross_instance.cli.store_cmds import store_app
from cross_instance.config import Config
from cross_instance.errors import CrossInstanceError, StoreError
from cross_instance.views.limits import build_limits
from cross_instance.views.status import build_status

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Coordinate LLM rate limits across agent processes.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
app.add_typer(workflow_app, name="workflow")
app.add_typer(locks_app, name="locks")
app.add_typer(queue_app, name="queue")
app.add_typer(store_app, name="store")
app.command("serve")(serve)
app.command("events")(events_command)


def _open_status(config: Config) -> dict[str, Any] | None:
    """The shared state's status, or None when no instance has ever run here."""
    store = open_configured_store(config)
    if store is None:
        return None
    try:
        return build_status(store, config)
    except StoreError as err:
        _fail(str(err), 1)
    finally:
        store.close()


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Every instance, its active requests and provider usage (= pi_instance_status)."""
    from cross_instance.cli.render import render_status

    config = _config()
    view = _open_status(config)
    if view is None:
        message = no_state(config.runtime_dir)
        _emit({"stateDir": str(config.runtime_dir), "instances": [], "message": message},
              as_json, message)
        return
    if not view["instances"] and not as_json:
        typer.echo(f"No instances registered (state: {config.runtime_dir}).")
        return
    _emit(view, as_json, render_status(view))


limits_app = typer.Typer(help="Limits, learned limits, usage and cooldowns (= pi_model_limits).")
app.add_typer(limits_app, name="limits")
ProviderOpt = Annotated[str | None, typer.Option(
    "--provider", help="Only this provider.")]


@limits_app.callback(invoke_without_command=True)
def limits(ctx: typer.Context, provider: ProviderOpt = None, as_json: JsonOpt = False) -> None:
    """Configured, learned and effective limits, usage, burst and cooldowns per provider."""
    if ctx.invoked_subcommand is not None:
        return
    from cross_instance.cli.render import render_limits
    from cross_instance.views.limits import read_budgets

    config = _config()
    status = None
    budgets: list[dict[str, Any]] = []
    store = open_configured_store(config)
    if store is not None:
        try:
            status = build_status(store, config)
            budgets = read_budgets(store, config)
        except StoreError as err:
            _fail(str(err), 1)
        finally:
            store.close()
    view = build_limits(config, status, provider, budgets)
    _emit(view, as_json, render_limits(view))


@limits_app.command("reset")
def limits_reset(provider: ProviderOpt = None, as_json: JsonOpt = False) -> None:
    """Forget what adaptive control learned (all providers, or one); limits stay enforced."""
    config = _config()
    store = open_configured_store(config)
    if store is None:
        _emit({"reset": 0}, as_json, f"Nothing to reset: no state in {config.runtime_dir}.")
        return
    try:
        keys = None
        if provider is not None:
            keys = [b.key for b in store.snapshot().buckets
                    if b.key.partition(":")[2].partition("/")[0] == provider]
        count = store.reset_learned(keys)
    except StoreError as err:
        _fail(str(err), 1)
        return
    finally:
        store.close()
    target = f" of {provider}" if provider else ""
    _emit({"reset": count}, as_json, f"Reset the learned state{target}: {count} bucket(s).")


@app.command()
def demo(
    instances: Annotated[int, typer.Option(min=1, max=32, help="Instance processes.")] = 3,
    duration: Annotated[float, typer.Option(min=0.5, max=600, help="Seconds per run.")] = 12.0,
    rpm: Annotated[int, typer.Option(min=1, help="The fake provider's requests/minute.")] = 300,
    out: Annotated[Path, typer.Option(help="Where the chart goes.")] = Path(".pi/demo"),
    progress: Annotated[bool, typer.Option(help="Show live progress.")] = True,
) -> None:
    """N instances against a local fake provider: uncoordinated, then coordinated."""
    from cross_instance.demo.run import run_demo

    try:
        run_demo(instances=instances, duration=duration, rpm=rpm, out_dir=out,
                 progress=progress)
    except ValueError as err:
        _fail(str(err), 2)


def main() -> None:
    try:
        app()
    except CrossInstanceError as err:  # anything not handled by a command: one line, no trace
        typer.echo(f"pi-xi: {err}", err=True)
        sys.exit(1)


def instance_status_main() -> None:
    """``pi_instance_status`` = ``pi-xi status``."""
    sys.argv = [sys.argv[0], "status", *sys.argv[1:]]
    main()


def model_limits_main() -> None:
    """``pi_model_limits`` = ``pi-xi limits``."""
    sys.argv = [sys.argv[0], "limits", *sys.argv[1:]]
    main()
