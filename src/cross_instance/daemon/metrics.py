"""``GET /metrics``: the daemon in Prometheus text, for dashboards and alerts.

Two kinds of series, all named ``pi_xi_*``, labelled ``provider`` and ``model`` (``model=""``
for a provider-wide limit; ``unit`` is ``requests`` or ``tokens`` where a bucket is either):

- read from the store (every instance of it, not only this daemon's clients): configured,
  learned, effective and provider-stated limits, usage in the last minute, cooldowns, active
  instances, permits held, waiters in the store's queue, concurrency caps, and the 429s that
  any instance announced in the shared event log since this daemon started;
- counted by this daemon for its own HTTP clients: permits granted, the time each waited,
  requests being waited for now, 429s reported to it, event-stream subscribers, and the
  provider gateway's requests by upstream status and those in flight now.

Promises:

- the store is read at most once per ``SNAPSHOT_EVERY_S`` however often ``/metrics`` is
  scraped (scrapes in between get the last reading; scrapes that arrive together share one),
  and always in the daemon's store threads, never on the event loop;
- every daemon has a ``CollectorRegistry`` of its own (not the process-wide one), so several
  daemons in one process never clash;
- label values clients choose (provider, model) are bounded: past ``MAX_SERIES`` pairs, new
  ones are counted under ``other``, so a client cannot grow the scrape without bound;
- a store that cannot be read does not fail the scrape: ``pi_xi_store_up`` says 0 and the
  store's series are the last ones read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from cross_instance.core import adaptive
from cross_instance.core import events as ev
from cross_instance.core.keys import REQUESTS, TOKENS, parse_key
from cross_instance.core.records import Snapshot
from cross_instance.daemon.state import Daemon
from cross_instance.hostfacts import identity as hostinfo

#: The text format every Prometheus server reads (prometheus_client >= 0.20 names it
#: differently across versions, so it is spelled out here).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SNAPSHOT_EVERY_S = 1.0
MAX_SERIES = 500
EVENT_PAGE = 1000
EVENT_PAGES_PER_READ = 20  # a daemon far behind the log catches up over several scrapes
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 120.0, 300.0)
OTHER = "other"

router = APIRouter()
#: How the OpenAPI document shows the JSON errors of these routes (the token's 401, a bad
#: argument's 400), whatever the media type of their success.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {"4XX": {
    "description": "JSON error with a stable code (401 unauthorized without the token)",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["code", "message", "retryable"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "retryable": {"type": "boolean"}}}}}}}


class LabelBound:
    """Provider/model label pairs, at most ``limit`` distinct ones (then ``other``)."""

    def __init__(self, limit: int = MAX_SERIES) -> None:
        self.limit = limit
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, provider: str, model: str | None) -> tuple[str, str]:
        pair = (provider, model or "")
        if pair in self._seen:
            return pair
        with self._lock:
            if len(self._seen) >= self.limit:
                return (OTHER, OTHER)
            self._seen.add(pair)
        return pair


@dataclass(frozen=True, slots=True)
class _PermitSeries:
    waiting: Any
    granted: Any
    wait_seconds: Any


class DaemonMetrics:
    """One daemon's metrics: the counters its routes update and the store's reading."""

    def __init__(self, daemon: Daemon, snapshot_every_s: float = SNAPSHOT_EVERY_S) -> None:
        self.daemon = daemon
        self.snapshot_every_s = snapshot_every_s
        self.registry = CollectorRegistry()
        self.labels = LabelBound()
        pm = ["provider", "model"]
        reg = self.registry
        self.granted = Counter("pi_xi_permits_granted", "Permits this daemon granted to its "
                               "HTTP clients", pm, registry=reg)
        self.remote_granted = Counter(
            "pi_xi_remote_permits_granted", "Permits the store granted to Python runtimes that "
            "use this daemon as their store (their waits are timed by the runtimes)", pm,
            registry=reg)
        self.wait_seconds = Histogram("pi_xi_permit_wait_seconds", "Seconds an HTTP client's "
                                      "permit request waited before it was granted", pm,
                                      buckets=WAIT_BUCKETS, registry=reg)
        self.waiting = Gauge("pi_xi_permit_requests_waiting", "Permit requests of HTTP clients "
                             "this daemon is holding open now (not yet granted or refused)", pm,
                             registry=reg)
        self.rate_limited_reported = Counter(
            "pi_xi_rate_limited_reported", "429 answers HTTP clients reported to this daemon "
            "(/v1/permits/report)", pm, registry=reg)
        self.rate_limited_events = Counter(
            "pi_xi_rate_limited_events", "rate_limited events in the store's shared event log "
            "(429s any instance of the store announced) since this daemon started", pm,
            registry=reg)
        self.subscribers = Gauge("pi_xi_event_subscribers", "Clients following /v1/events now",
                                 registry=reg)
        self.subscribers_dropped = Counter(
            "pi_xi_event_subscribers_dropped", "/v1/events subscribers dropped for falling too "
            "far behind (told to reconnect with Last-Event-ID)", registry=reg)
        self.gateway_requests = Counter(
            "pi_xi_gateway_requests", "Requests the provider gateway answered, by the status "
            "the client got (the upstream's, or the gateway's own 429/502/504)",
            [*pm, "status"], registry=reg)
        self.budget_events = Counter(
            "pi_xi_budget_events", "budget_warning (a budget reached warnShare) and "
            "budget_exceeded (a call held back) events this daemon announced",
            ["kind", "scope", "provider", "period"], registry=reg)
        self.gateway_in_flight = Gauge(
            "pi_xi_gateway_requests_in_flight", "Gateway requests waiting for a permit or "
            "being forwarded now", ["provider"], registry=reg)
        self.snapshot_reads = 0  # how many times the store was read (the cache's bound)
        self._store = _StoreCollector()
        reg.register(self._store)
        self._read_at = -float("inf")
        self._reading: asyncio.Future[None] | None = None
        self._started_wall_ms = time.time_ns() // 10**6
        self._event_cursor = 0
        self._store_failing = False
        self._series: dict[tuple[str, str | None], _PermitSeries] = {}
        self._answered: dict[tuple[str, str | None, int], Any] = {}

    # --- what the routes call (on the event loop; each a few dict look-ups) ----------------
    def _permit_series(self, provider: str, model: str | None) -> _PermitSeries:
        """The permit series of one provider/model pair, looked up once (a ``labels`` call
        takes a lock and checks its values: too much for every permit of the gateway)."""
        found = self._series.get((provider, model))
        if found is None:
            labels = self.labels(provider, model)
            found = _PermitSeries(self.waiting.labels(*labels), self.granted.labels(*labels),
                                  self.wait_seconds.labels(*labels))
            if len(self._series) < 4 * MAX_SERIES:
                self._series[(provider, model)] = found
        return found

    def wait_began(self, provider: str, model: str | None) -> None:
        self._permit_series(provider, model).waiting.inc()

    def wait_ended(self, provider: str, model: str | None) -> None:
        self._permit_series(provider, model).waiting.dec()

    def permit_granted(self, provider: str, model: str | None, waited_s: float) -> None:
        series = self._permit_series(provider, model)
        series.granted.inc()
        series.wait_seconds.observe(waited_s)

    def remote_permit_granted(self, provider: str, model: str | None) -> None:
        self.remote_granted.labels(*self.labels(provider, model)).inc()

    def rate_limited(self, provider: str, model: str | None) -> None:
        self.rate_limited_reported.labels(*self.labels(provider, model)).inc()

    def budget_event(self, kind: str, data: dict[str, Any]) -> None:
        self.budget_events.labels(kind, str(data.get("scope", "")),
                                  str(data.get("provider") or ""),
                                  str(data.get("period", ""))).inc()

    def gateway_answered(self, provider: str, model: str | None, status: int) -> None:
        found = self._answered.get((provider, model, status))
        if found is None:
            found = self.gateway_requests.labels(*self.labels(provider, model), str(status))
            if len(self._answered) < 8 * MAX_SERIES:
                self._answered[(provider, model, status)] = found
        found.inc()

    # --- the store's reading ----------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the store if the last reading is older than ``snapshot_every_s``; scrapes that
        arrive while a reading runs wait for that one."""
        if self._reading is not None:
            await asyncio.shield(self._reading)
            return
        if time.monotonic() - self._read_at < self.snapshot_every_s:
            return
        self._read_at = time.monotonic()
        self._reading = asyncio.ensure_future(self.daemon.run(self._read))
        try:
            await asyncio.shield(self._reading)
        finally:
            self._reading = None

    def _read(self) -> None:
        """In a store thread: the snapshot turned into series, and the new 429 events."""
        self.snapshot_reads += 1
        store = self.daemon.store
        try:
            snap = store.snapshot()
            self._count_rate_limited_events()
        except Exception as err:  # noqa: BLE001 - a scrape must not fail with the store
            if not self._store_failing:
                self.daemon.log("Metrics cannot read the store: %s", err)
            self._store_failing = True
            self._store.up = False
            return
        self._store_failing = False
        families = store_families(snap)
        if self.daemon.config.budgets is not None:
            from cross_instance.views.limits import read_budgets

            try:
                families += budget_families(read_budgets(store, self.daemon.config))
            except Exception as err:  # noqa: BLE001 - the other series still count
                self.daemon.log("Metrics cannot read the spend budgets: %s", err)
        self._store.families = families
        self._store.up = True

    def _count_rate_limited_events(self) -> None:
        for _ in range(EVENT_PAGES_PER_READ):
            page = self.daemon.store.events(self._event_cursor, EVENT_PAGE)
            if not page:
                return
            for event in page:
                if event.kind == ev.RATE_LIMITED and event.wall_ms >= self._started_wall_ms:
                    provider, model = event.data.get("provider"), event.data.get("model")
                    self.rate_limited_events.labels(*self.labels(
                        str(provider) if provider is not None else "",
                        str(model) if model is not None else None)).inc()
            self._event_cursor = page[-1].event_id

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCollector:
    """The series read from the store, as last read (``collect`` does no I/O)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []
        self.up = False

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pi_xi_store_up", "1 when the last reading of the store "
                               "succeeded, 0 when it failed (its series are then the last read)")
        up.add_metric([], 1.0 if self.up else 0.0)
        yield up
        yield from self.families


def budget_families(lines: list[dict[str, Any]]) -> list[Metric]:
    """Each spend budget's limit, spend and share in its current period."""
    labels = ["scope", "provider", "period"]
    limit = GaugeMetricFamily("pi_xi_budget_limit_usd", "A spend budget (USD per UTC day or "
                              "month)", labels=labels)
    spent = GaugeMetricFamily("pi_xi_budget_spent_usd", "What the budget's scope spent in the "
                              "current period (USD, every instance of the store)", labels=labels)
    share = GaugeMetricFamily("pi_xi_budget_used_share", "Spent / limit (alert at the "
                              "budgets' warnShare, 0.8 by default)", labels=labels)
    for b in lines:
        values = [b["scope"], b["provider"] or "", b["period"]]
        limit.add_metric(values, b["limitUsd"])
        spent.add_metric(values, b["spentUsd"])
        share.add_metric(values, b["share"] if b["share"] is not None else 0.0)
    return [limit, spent, share]


def store_families(snap: Snapshot) -> list[Metric]:
    """The store's series from one snapshot (pure apart from probing local pids, as the status
    view does to judge instances)."""
    bucket = ["provider", "model", "unit"]
    pm = ["provider", "model"]

    def family(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=labels)

    configured = family("pi_xi_limit_configured_per_minute", "Configured limit (requests or "
                        "tokens per minute)", bucket)
    learned = family("pi_xi_limit_learned_per_minute", "Rate adaptive control learned, where it "
                     "learned one", bucket)
    effective = family("pi_xi_limit_effective_per_minute", "Rate permits are granted at now "
                       "(the learned rate when below the configured one)", bucket)
    reported = family("pi_xi_limit_reported", "Limit the provider's headers stated, where they "
                      "did", bucket)
    usage = family("pi_xi_usage_last_minute", "Requests or tokens granted in the last minute, "
                   "by every instance", bucket)
    cooling = family("pi_xi_cooldown_active", "1 while a cooldown (after a 429) admits nobody",
                     bucket)
    cool_left = family("pi_xi_cooldown_remaining_seconds", "Seconds left in the cooldown",
                       bucket)
    now = snap.now_ns
    for b in snap.buckets:
        try:
            key = parse_key(b.key)
        except ValueError:
            continue
        if key.kind not in (REQUESTS, TOKENS):
            continue
        labels = [key.provider, key.model or "", "requests" if key.kind == REQUESTS else "tokens"]
        spec, _ = adaptive.effective(b.spec, b.tat_ns, b.learned_rate, b.cooldown_until_ns)
        configured.add_metric(labels, b.spec.per_minute)
        effective.add_metric(labels, spec.per_minute)
        if b.learned_rate is not None:
            learned.add_metric(labels, b.learned_rate)
        if b.reported_limit is not None:
            reported.add_metric(labels, b.reported_limit)
        usage.add_metric(labels, b.used_last_minute)
        left_s = max(0, b.cooldown_until_ns - now) / 1e9
        cooling.add_metric(labels, 1.0 if left_s > 0 else 0.0)
        cool_left.add_metric(labels, left_s)

    cap = family("pi_xi_concurrency_limit", "Concurrent permits allowed (provider=\"\": the "
                 "total cap, totalMaxLlm; model=\"\": the provider's maxConcurrency)", pm)
    in_use = family("pi_xi_concurrency_in_use", "Concurrent permits held against that cap", pm)
    for g in snap.groups:
        try:
            key = parse_key(g.key)
        except ValueError:
            continue
        labels = [key.provider, key.model or ""]
        cap.add_metric(labels, g.limit)
        in_use.add_metric(labels, g.used)

    held = family("pi_xi_permits_held", "Permits held now, by every instance of the store", pm)
    for (provider, model), count in _count((p.provider, p.model or "") for p in snap.permits):
        held.add_metric([provider, model], count)

    statuses = [hostinfo.verdict(r, now) for r in snap.instances]
    active = family("pi_xi_instances_active", "Instances registered and alive", [])
    active.add_metric([], sum(1 for v in statuses if not v.is_dead))
    by_status = family("pi_xi_instances", "Instances registered, by liveness", ["status"])
    for (status,), count in _count((v.value,) for v in statuses):
        by_status.add_metric([status], count)
    waiting = family("pi_xi_store_waiting", "Permit requests waiting in the store's queue (of "
                     "every instance and daemon of the store)", [])
    waiting.add_metric([], snap.waiting)
    return [configured, learned, effective, reported, usage, cooling, cool_left, cap, in_use,
            held, active, by_status, waiting]


def _count(items: Iterable[tuple[str, ...]]) -> list[tuple[tuple[str, ...], int]]:
    counts: dict[tuple[str, ...], int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return sorted(counts.items())


_ATTRIBUTE = "_pi_xi_metrics"  # kept on the daemon: they live and go with it
_MAKING = threading.Lock()


def metrics_for(daemon: Daemon) -> DaemonMetrics:
    """The metrics of ``daemon`` (made on first use; every route of its app shares them)."""
    found: DaemonMetrics | None = getattr(daemon, _ATTRIBUTE, None)
    if found is None:
        with _MAKING:
            found = getattr(daemon, _ATTRIBUTE, None)
            if found is None:
                found = DaemonMetrics(daemon)
                setattr(daemon, _ATTRIBUTE, found)
    return found


def router_for(daemon: Daemon) -> APIRouter:
    """The ``/metrics`` route, with ``daemon``'s metrics made now: what the store's event log
    counts is what happened from this moment on."""
    metrics_for(daemon)
    return router


@router.get("/metrics", tags=["daemon"], response_class=Response,
            responses={200: {"description": "Prometheus text exposition format 0.0.4",
                             "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}},
                       **ERROR_RESPONSES})
async def metrics(request: Request) -> Response:
    """The daemon's metrics in Prometheus text (the ``pi_xi_*`` series of ``docs/daemon.md``).
    Needs the token when the daemon has one."""
    daemon: Daemon = request.app.state.daemon
    found = metrics_for(daemon)
    await found.refresh()
    return Response(found.exposition(), media_type=CONTENT_TYPE)
