"""Plain-text renderings of the status and limits views, in the user guide's shape."""

from __future__ import annotations

from typing import Any


def _usage(used: int, limit: int, unit: str = "requests") -> str:
    pct = round(100 * used / limit) if limit else 0
    return f"{used}/{limit} {unit} ({pct}%)"


def render_status(view: dict[str, Any]) -> str:
    lines: list[str] = []
    conc = view["concurrency"]
    lines.append(f"Store: {view['store']}")
    lines += [f"Warning: {w}" for w in view.get("storeWarnings", [])]
    lines.append(f"Active instances: {view['activeInstanceCount']}   "
                 f"LLM calls in flight: {conc['inUse']}/{conc['limit']}   "
                 f"waiting: {conc['waiting']}")
    for inst in view["instances"]:
        state = {"alive": "Connected", "unknown": "Connected (process not checkable)",
                 "dead": "Dead (awaiting cleanup)"}[inst["status"]]
        lines += ["", f"Instance: {inst['instanceId']}", f"  Status: {state}",
                  f"  PID: {inst['pid']} on {inst['host']}   heartbeat "
                  f"{inst['heartbeatAgeMs'] / 1000:.1f}s ago",
                  f"  Active requests: {inst['activeRequests']}   parallel limit: "
                  f"{inst['parallelLimit']}   priority: {inst['priority']}"
                  + (f"   reserved: {inst['reservedCapacity']}"
                     if inst["reservedCapacity"] else "")]
        if inst["activeModels"]:
            models = ", ".join(f"{m['provider']}/{m['model']} x{m['count']}"
                               for m in inst["activeModels"])
            lines.append(f"  Active models: {models}")
        if inst.get("workflows"):
            lines.append(f"  Workflows owned: {', '.join(inst['workflows'])}")
        if inst.get("locks"):
            lines.append(f"  Locks held: {', '.join(inst['locks'])}")
        if inst["providers"]:
            lines.append("  Provider usage:")
            for name, u in sorted(inst["providers"].items()):
                lines.append(f"    {name}: {_usage(u['used'], u['limit'])}")
    if view["providers"]:
        lines += ["", "Providers (all instances, last minute):"]
        for name, p in sorted(view["providers"].items()):
            if "requestsPerMinute" in p:
                lines.append(f"  {name}: {_usage(p['currentUsage'], p['requestsPerMinute'])}, "
                             f"burst available {p['burstAvailable']}/{p['burst']}, "
                             f"in flight {p['activeRequests']}")
    return "\n".join(lines)


def _limit_lines(cfg: dict[str, Any], indent: str) -> list[str]:
    lines = [f"{indent}Requests/minute: {cfg['requestsPerMinute']}",
             f"{indent}Burst: {cfg['burst']}"]
    if cfg.get("tokensPerMinute"):
        lines.append(f"{indent}Tokens/minute: {cfg['tokensPerMinute']} "
                     f"(bucket {cfg['tokenBurst']})")
    if cfg.get("maxConcurrency"):
        lines.append(f"{indent}Max concurrency: {cfg['maxConcurrency']}")
    return lines


def render_limits(view: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, entry in view["providers"].items():
        if lines:
            lines.append("")
        cfg = entry["configured"]
        lines.append(f"Provider: {name}")
        eff = entry.get("effective")
        lines += _limit_lines(eff if eff and "requestsPerMinute" in eff else cfg, "  ")
        if eff and "requestsPerMinute" in eff:
            if (eff["requestsPerMinute"], eff["burst"]) != (cfg["requestsPerMinute"], cfg["burst"]):
                lines.append(f"  (this directory's config says {cfg['requestsPerMinute']}/min, "
                             f"burst {cfg['burst']}; the strictest live instance's limit applies)")
            if eff.get("learnedRequestsPerMinute") is not None:
                source = ("stated by the provider" if eff.get("reportedLimit") is not None
                          else "learned from 429s")
                lines.append(f"  Learned: {eff['effectiveRequestsPerMinute']}/min ({source})")
            if eff.get("cooldownRemainingS"):
                lines.append(f"  Cooldown: {eff['cooldownRemainingS']:.1f}s left "
                             f"(no instance calls before it ends)")
            lines.append(f"  Current usage: {eff['currentUsage']}/"
                         f"{eff.get('effectiveRequestsPerMinute', eff['requestsPerMinute'])}")
            lines.append(f"  Burst available: {eff['burstAvailable']}")
            if "tokenUsage" in eff:
                lines.append(f"  Token usage: {eff['tokenUsage']}/{eff['tokensPerMinute']}")
            lines.append(f"  In flight: {eff.get('activeRequests', 0)}")
        else:
            lines.append("  Current usage: 0 (not used yet)")
        for pattern, m in cfg["modelPatterns"].items():
            parts = [f"{k}={v}" for k, v in m.items() if v is not None]
            lines.append(f"  Model pattern {pattern}: {', '.join(parts) or 'no extra limits'}")
        for model, m in entry.get("models", {}).items():
            if "requestsPerMinute" in m:
                lines.append(f"  Model {model}: {m['currentUsage']}/{m['requestsPerMinute']} "
                             f"requests, burst available {m['burstAvailable']}")
    if view.get("budgets"):
        lines += ["", "Spend budgets (UTC periods):"]
        for b in view["budgets"]:
            who = "account" if b["provider"] is None else b["provider"]
            share = "" if b["share"] is None else f" ({b['share']:.0%})"
            lines.append(f"  {who} {b['period']} {b['periodId']}: ${b['spentUsd']:.4f} of "
                         f"${b['limitUsd']:.4f} spent{share}, ${b['leftUsd']:.4f} left")
    if not view["shared"]:
        lines += ["", f"No shared state yet in {view['stateDir']}: usage appears once an "
                      f"instance has run."]
    return "\n".join(lines)
