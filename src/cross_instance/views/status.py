"""The status view (``pi-xi status``, ``pi-xi limits``, ``rt.status()``): one snapshot of a
store turned into plain JSON-ready data. Pure apart from reading the snapshot."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cross_instance.config import Config
from cross_instance.core import adaptive, limiter, parallel
from cross_instance.core.arbiter import GLOBAL_GROUP
from cross_instance.core.keys import REQUESTS, TOKENS, is_requests, parse_key, provider_group
from cross_instance.core.records import BucketState, Snapshot
from cross_instance.hostfacts import identity as hostinfo
from cross_instance.stores.base import Store


def _iso(wall_ms: int) -> str:
    return dt.datetime.fromtimestamp(wall_ms / 1000, dt.UTC).isoformat(
        timespec="seconds")


def _percent(used: int, limit: int) -> int:
    return round(100 * used / limit) if limit else 0


def _bucket_view(b: BucketState, now: int) -> dict[str, Any]:
    spec, tat = adaptive.effective(b.spec, b.tat_ns, b.learned_rate, b.cooldown_until_ns)
    return {
        "requestsPerMinute" if is_requests(b.key) else "tokensPerMinute": b.spec.per_minute,
        "burst" if is_requests(b.key) else "tokenBurst": b.spec.burst,
        "currentUsage": b.used_last_minute,
        "percent": _percent(b.used_last_minute, spec.per_minute),
        "burstAvailable": limiter.available(tat, now, spec),
        "learnedRequestsPerMinute": b.learned_rate,
        "reportedLimit": b.reported_limit,
        "effectiveRequestsPerMinute": spec.per_minute,
        "cooldownRemainingS": round(max(0, b.cooldown_until_ns - now) / 1e9, 3),
    }


def build_status(store: Store, config: Config) -> dict[str, Any]:
    """The status of every instance, with the workflows each owns and the locks each holds."""
    view = status_from_snapshot(store.snapshot(), config, store.url)
    owned: dict[str, list[str]] = {}
    for w in store.list_workflows():
        if w.owner is not None:
            owned.setdefault(w.owner.instance_id, []).append(w.workflow_id)
    held: dict[str, list[str]] = {}
    for lock in store.list_locks():
        held.setdefault(lock.holder, []).append(lock.resource)
    for inst in view["instances"]:
        inst["workflows"] = owned.get(inst["instanceId"], [])
        inst["locks"] = held.get(inst["instanceId"], [])
    view["storeWarnings"] = list(store.warnings)
    return view


def status_from_snapshot(snap: Snapshot, config: Config, url: str) -> dict[str, Any]:
    now = snap.now_ns
    groups = {g.key: g for g in snap.groups}
    active_by_instance: dict[str, int] = {}
    active_by_provider: dict[str, int] = {}
    for p in snap.permits:
        active_by_instance[p.instance_id] = active_by_instance.get(p.instance_id, 0) + 1
        active_by_provider[p.provider] = active_by_provider.get(p.provider, 0) + 1

    providers: dict[str, dict[str, Any]] = {}
    for b in snap.buckets:
        key = parse_key(b.key)
        entry = providers.setdefault(key.provider, {"models": {}})
        target = entry["models"].setdefault(key.model, {}) if key.model is not None else entry
        view = _bucket_view(b, now)
        if key.kind == TOKENS:
            view = {"tokensPerMinute": view["tokensPerMinute"], "tokenBurst": view["tokenBurst"],
                    "tokenUsage": view["currentUsage"], "tokensAvailable": view["burstAvailable"]}
        target.update(view)
    for name, entry in providers.items():
        entry["activeRequests"] = active_by_provider.get(name, 0)
        group = groups.get(provider_group(name))
        entry["maxConcurrency"] = group.limit if group else None

    live = []
    statuses = {}
    for r in snap.instances:
        verdict = hostinfo.verdict(r, now)
        statuses[r.instance_id] = verdict.value
        if not verdict.is_dead:
            live.append(r)
    total = groups[GLOBAL_GROUP].limit if GLOBAL_GROUP in groups else config.total_max_llm
    priorities = [r.priority for r in live]
    instances = []
    for r in snap.instances:
        usage = {}
        for b in snap.buckets:
            key = parse_key(b.key)
            if key.kind == REQUESTS and key.model is None and r.instance_id in b.used_by_instance:
                used = b.used_by_instance[r.instance_id]
                usage[key.provider] = {"used": used, "limit": b.spec.per_minute,
                                    "percent": _percent(used, b.spec.per_minute)}
        instances.append({
            "instanceId": r.instance_id, "status": statuses[r.instance_id],
            "pid": r.pid, "host": r.domain.host, "sessionId": r.session_id, "cwd": r.cwd,
            "startedAt": _iso(r.started_wall_ms), "lastHeartbeat": _iso(r.heartbeat_wall_ms),
            "heartbeatAgeMs": max(0, now - r.heartbeat_ns) // 1_000_000,
            "activeRequests": active_by_instance.get(r.instance_id, 0),
            "priority": r.priority, "reservedCapacity": r.reserved,
            "parallelLimit": parallel.weighted_share(total, r.priority, priorities or [1]),
            "activeModels": [{"provider": p, "model": m, "count": c}
                             for p, m, c in r.active_models],
            "workload": {"pendingTasks": r.workload.pending_tasks,
                         "avgLatencyMs": r.workload.avg_latency_ms,
                         "activeOrchestrations": r.workload.active_orchestrations},
            "providers": usage,
        })
    in_use = groups[GLOBAL_GROUP].used if GLOBAL_GROUP in groups else 0
    return {
        "enabled": True,
        "store": url,
        "stateDir": str(config.runtime_dir),
        "totalMaxLlm": total,
        "activeInstanceCount": len(live),
        "concurrency": {"limit": total, "inUse": in_use, "waiting": snap.waiting},
        "instances": instances,
        "providers": providers,
    }
