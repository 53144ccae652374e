"""``pi-xi workflow ...`` and ``pi-xi locks ...``: ownership and locks from a terminal.

Claims made here are made *for* a registered instance (``--instance``, default
``PI_INSTANCE_ID`` / ``crossInstance.instanceId``): the CLI process itself exits at once, so it
could not own anything. Exit codes: 0 done, 1 refused (owned by another, not the owner) or
store unavailable, 2 bad input.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer

from cross_instance.cli.common import config, emit, fail, open_configured_store
from cross_instance.config import Config
from cross_instance.core.ownership import Claim, Force, Owner, WorkflowRecord, check_workflow_id
from cross_instance.core.records import InstanceRecord
from cross_instance.errors import CrossInstanceError, NotRegisteredError
from cross_instance.hostfacts.identity import hostname, verdict
from cross_instance.stores.base import Store

workflow_app = typer.Typer(help="Workflow ownership (seed 002): status, claim, force-claim, "
                                "release.")
locks_app = typer.Typer(help="Locks: list them (with holder, token and expiry), clean up "
                             "expired ones.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
InstanceOpt = Annotated[str | None, typer.Option(
    "--instance", help="The registered instance to act for (default: PI_INSTANCE_ID).")]
IdArg = Annotated[str, typer.Argument(help="The workflow id (ulTaskId).")]


def _store(cfg: Config) -> Store | None:
    return open_configured_store(cfg)


def _instance(cfg: Config, given: str | None) -> str:
    who = given or cfg.instance_id
    if not who:
        fail("name the instance to act for: --instance ID or PI_INSTANCE_ID", 2)
    assert who is not None
    return who


def _valid_id(workflow_id: str) -> str:
    try:
        return check_workflow_id(workflow_id)
    except CrossInstanceError as err:
        fail(str(err), 2)


def describe(rec: WorkflowRecord, instances: dict[str, InstanceRecord], now: int
             ) -> dict[str, Any]:
    owner = rec.owner
    state = "released"
    if owner is not None:
        live = instances.get(owner.instance_id)
        same = live is not None and owner.same_process(Owner.of(live))
        state = verdict(live, now).value if same and live is not None else "dead"
    return {"ulTaskId": rec.workflow_id, "epoch": rec.epoch, "state": state,
            "ownerInstanceId": owner.instance_id if owner else None,
            "ownerPid": owner.pid if owner else None,
            "ownerHost": owner.domain.host if owner else None,
            "claimedAt": rec.claimed_wall_ms, "updatedAt": rec.updated_wall_ms}


def _when(wall_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall_ms / 1000))


@workflow_app.command("status")
def workflow_status(workflow_id: Annotated[str | None, typer.Argument(
        help="One workflow (default: all).")] = None, as_json: JsonOpt = False) -> None:
    """Owner, pid, host, liveness and epoch of every workflow (or one)."""
    cfg = config()
    store = _store(cfg)
    rows: list[dict[str, Any]] = []
    if store is not None:
        try:
            if workflow_id is not None:
                one = store.get_workflow(_valid_id(workflow_id))
                records = [one] if one is not None else []
            else:
                records = store.list_workflows()
            instances = {r.instance_id: r for r in store.list_instances()}
            rows = [describe(r, instances, store.now_ns()) for r in records]
        finally:
            store.close()
    if workflow_id is not None and not rows:
        emit({"ulTaskId": workflow_id, "state": "unknown workflow"}, as_json,
                     f"No workflow {workflow_id!r} has been claimed.")
        return
    lines = [f"{'WORKFLOW':<32} {'EPOCH':>5}  {'STATE':<8} {'OWNER':<28} {'PID':>7}  UPDATED"]
    for r in rows:
        lines.append(f"{r['ulTaskId']:<32} {r['epoch']:>5}  {r['state']:<8} "
                     f"{r['ownerInstanceId'] or '-':<28} {r['ownerPid'] or '-':>7}  "
                     f"{_when(r['updatedAt'])}")
    text = "\n".join(lines) if rows else "No workflows."
    emit(rows if workflow_id is None else rows[0], as_json, text)


def _claim(workflow_id: str, instance: str | None, force: Force, as_json: bool) -> None:
    cfg = config()
    wid, who = _valid_id(workflow_id), _instance(cfg, instance)
    store = _store(cfg)
    if store is None:
        fail(f"no state in {cfg.runtime_dir}: instance {who!r} is not running", 1)
        return
    try:
        claim: Claim = store.claim_workflow(wid, who, force=force)
    except NotRegisteredError as err:
        fail(str(err), 1)
        return
    finally:
        store.close()
    action = claim.decision.action.value
    if claim.allowed:
        emit({"ulTaskId": wid, "ownerInstanceId": who, "epoch": claim.epoch,
                      "action": action}, as_json,
                     f"{wid}: {action.replace('_', ' ')} for {who} at epoch {claim.epoch}")
        return
    owner = claim.before.owner if claim.before is not None else None
    payload = {"error": "workflow_owned_by_other", "ulTaskId": wid,
               "ownerInstanceId": owner.instance_id if owner else None,
               "ownerPid": owner.pid if owner else None, "outcomeCode": "NONRETRYABLE_FAILURE",
               "retryRecommended": False, "reason": claim.decision.reason}
    hint = " (force-claim --live takes it from a live owner)" if force is Force.DEAD else ""
    emit(payload, as_json, f"UL workflow {wid} is owned by another instance "
                 f"({payload['ownerInstanceId']}, pid {payload['ownerPid']}): "
                 f"{claim.decision.reason}{hint}")
    raise typer.Exit(1)


@workflow_app.command("claim")
def workflow_claim(workflow_id: IdArg, instance: InstanceOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Claim for --instance: free, or from a dead owner (auto-claim); refused if alive."""
    _claim(workflow_id, instance, Force.NO, as_json)


@workflow_app.command("force-claim")
def workflow_force_claim(workflow_id: IdArg, instance: InstanceOpt = None,
                         live: Annotated[bool, typer.Option(
                             "--live", help="Take it even from a live owner.")] = False,
                         as_json: JsonOpt = False) -> None:
    """Seed ``ul_workflow_force_claim``: take it from a gone owner (--live: from any)."""
    _claim(workflow_id, instance, Force.LIVE if live else Force.DEAD, as_json)


@workflow_app.command("release")
def workflow_release(workflow_id: IdArg, instance: InstanceOpt = None,
                     live: Annotated[bool, typer.Option(
                         "--live", help="Release it even while its owner is alive (or not "
                                        "known to be dead): that owner's next fenced write "
                                        "is then rejected.")] = False,
                     as_json: JsonOpt = False) -> None:
    """Release a workflow --instance owns (its epoch is kept); a live owner's needs --live."""
    cfg = config()
    wid, who = _valid_id(workflow_id), _instance(cfg, instance)
    store = _store(cfg)
    done, state, by = False, "", acting_for(who)
    if store is not None:
        try:
            rec = store.get_workflow(wid)
            if rec is not None and rec.owner is not None and rec.owner.instance_id == who:
                instances = {r.instance_id: r for r in store.list_instances()}
                state = describe(rec, instances, store.now_ns())["state"]
                if state != "dead" and not live:
                    emit({"error": "owner_alive", "ulTaskId": wid, "ownerInstanceId": who,
                          "state": state, "released": False}, as_json,
                         f"{wid}: its owner {who} is {state}; releasing a live owner's "
                         f"workflow needs --live (its next fenced write is then rejected)")
                    raise typer.Exit(1)
                done = store.release_workflow(wid, who, rec.epoch, by)
        finally:
            store.close()
    emit({"ulTaskId": wid, "released": done, "by": by, **({"ownerState": state} if done else {})},
         as_json, f"{wid}: released for {who} ({state}) by {by}" if done
         else f"{wid}: not owned by {who}")
    if not done:
        raise typer.Exit(1)


def acting_for(instance_id: str) -> str:
    """How events name the CLI when it acts for ``instance_id``: this process and host."""
    return f"pi-xi (pid {os.getpid()} on {hostname()}) for {instance_id}"


@locks_app.callback(invoke_without_command=True)
def locks(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every held lock: resource, holder, fencing token, expiry."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = config()
    store = _store(cfg)
    rows: list[dict[str, Any]] = []
    if store is not None:
        try:
            now = store.now_ns()
            rows = [{"resource": x.resource, "holder": x.holder, "token": x.token,
                     "lockId": x.lock_id, "acquiredAt": x.acquired_wall_ms,
                     "expiresAt": x.expires_wall_ms,
                     "expiresInS": round((x.expires_ns - now) / 1e9, 3)}
                    for x in store.list_locks()]
        finally:
            store.close()
    lines = [f"{'RESOURCE':<40} {'HOLDER':<28} {'TOKEN':>6}  EXPIRES IN"]
    lines += [f"{r['resource'][:40]:<40} {r['holder']:<28} {r['token']:>6}  "
              f"{r['expiresInS']:.1f} s{' (expired)' if r['expiresInS'] <= 0 else ''}"
              for r in rows]
    emit(rows, as_json, "\n".join(lines) if rows else "No locks held.")


@locks_app.command("cleanup")
def locks_cleanup(as_json: JsonOpt = False) -> None:
    """Free locks past their TTL or held by dead instances (seed cleanupExpiredLocks)."""
    cfg = config()
    store = _store(cfg)
    freed = []
    if store is not None:
        try:
            freed = store.cleanup_expired_locks()
        finally:
            store.close()
    emit({"freed": [x.resource for x in freed]}, as_json,
                 f"Freed {len(freed)} lock(s)" + (": " + ", ".join(x.resource for x in freed)
                                                  if freed else "."))
