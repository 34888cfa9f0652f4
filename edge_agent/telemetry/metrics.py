"""Prometheus metrics. One registry per Agent so tests can run several side by side.

With worker processes (`--workers N`) prometheus-client runs in multiprocess mode: the
supervisor sets PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client,
every metric write lands in a per-process file there, and /metrics (whichever worker
answers it) merges all the files, so counters and histograms are totals over workers.
Gauges computed at scrape time (`set_function`) cannot work that way: `track()` keeps
them as functions in one process and writes them periodically in multiprocess mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from edge_agent.telemetry import mp_values

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Which worker this process is ("0" without workers); set by the supervisor.
WORKER_INDEX_ENV = "EDGE_AGENT_WORKER_INDEX"


def multiprocess_dir() -> str | None:
    """The multiprocess directory, if prometheus-client runs in multiprocess mode here."""
    return os.environ.get(MULTIPROC_ENV) or None


if multiprocess_dir() is not None:
    # prometheus-client's file values without its system call per write (mp_values.py).
    values.ValueClass = mp_values.MultiProcessValue  # type: ignore[assignment,misc]


def _remember_children(metric: MetricWrapperBase) -> None:
    """Make `metric.labels(*values)` a dict lookup after the first call for those values.

    prometheus-client validates and converts the values on every call (~2.5 µs; a miss
    made eight such calls, ~10 % of the agent's own Python per miss). The agent never
    removes a labelled child, and its label values come from closed or bounded sets
    (config names, statuses, reasons, the bounded tenant label), so the memo is bounded.
    """
    make = metric.labels
    children: dict[tuple[object, ...], Any] = {}

    def labels(*values: object, **named: object) -> Any:
        if named:
            return make(*values, **named)
        child = children.get(values)
        if child is None:
            child = children[values] = make(*values)
        return child

    metric.labels = labels  # type: ignore[method-assign]


class _Streams:
    """Open ext_proc streams (a gauge), and the streams each worker has handled.

    the servicer only calls inc()/dec(); counting per worker here costs one more value
    write per stream and shows how the shared port spreads connections over workers.
    """

    __slots__ = ("_handled", "open")

    def __init__(self, open_: Gauge, handled: Counter) -> None:
        self.open = open_
        self._handled = handled

    def inc(self) -> None:
        self.open.inc()
        self._handled.inc()

    def dec(self) -> None:
        self.open.dec()


# Sub-millisecond resolution: the whole ext_proc budget is ~1 ms per request.
_PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None
        self._tracked: list[tuple[Gauge, Callable[[], float]]] = []
        r = self.registry
        self.requests = Counter(
            "edge_agent_requests",
            "HTTP requests seen by the agent, by endpoint, client-facing model, provider "
            "and final status ('-' when the agent answered itself), and tenant.",
            ["endpoint", "model", "provider", "status", "tenant"],
            registry=r,
        )
        self.cache_results = Counter(
            "edge_agent_cache_results",
            "Cache decisions: hit, semantic-hit, miss or bypass.",
            ["endpoint", "result", "tenant"],
            registry=r,
        )
        self.cache_stores = Counter(
            "edge_agent_cache_stores",
            "Answers stored in the exact cache, or why not.",
            ["endpoint", "outcome"],
            registry=r,
        )
        # Sizes are per process: with workers, the sum over live workers is what the
        # gateway holds in memory (a dead worker's share goes with it).
        self.cache_entries = Gauge(
            "edge_agent_cache_entries",
            "Entries in the exact cache.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_bytes = Gauge(
            "edge_agent_cache_bytes",
            "Response bytes held by the exact cache.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.semantic_lookups = Counter(
            "edge_agent_semantic_lookups",
            "Semantic tier lookups: hit, miss, refused (a candidate above the threshold "
            "that the verifier rejected), shadow_hit (shadow mode), store_only "
            "(cache-control: no-cache), unservable (entry dropped), error (embedder), "
            "timeout (over cache.semantic.lookup_timeout_ms), or skipped under load: "
            "shed_queue (cache.semantic.max_pending in flight) or shed_cpu (over "
            "cache.semantic.max_cpu_share).",
            ["outcome"],
            registry=r,
        )
        self.semantic_refusals = Counter(
            "edge_agent_semantic_refusals",
            "Semantic lookups whose best candidate above the threshold the verifier refused, "
            "by reason (a closed set: numbers differ, wording differs, a word was added, "
            "roles differ, ...; never prompt text).",
            ["reason"],
            registry=r,
        )
        self.semantic_score = Histogram(
            "edge_agent_semantic_hit_score",
            "Cosine similarity of served semantic hits.",
            buckets=(0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0),
            registry=r,
        )
        self.semantic_shadow_saved = Counter(
            "edge_agent_semantic_shadow_saved_usd",
            "Shadow mode: what serving the would-be semantic hits would have saved, at the "
            "routed target's prices (0 where prices are not configured).",
            ["model"],
            registry=r,
        )
        self.semantic_entries = Gauge(
            "edge_agent_semantic_entries",
            "Entries in the semantic tier.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.semantic_bytes = Gauge(
            "edge_agent_semantic_bytes",
            "Answer bytes the semantic tier keeps alive (cache.semantic.max_bytes).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.semantic_partitions = Gauge(
            "edge_agent_semantic_partitions",
            "FAISS indexes (one per model/instructions/tools/parameters/history context).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.phase_seconds = Histogram(
            "edge_agent_ext_proc_phase_seconds",
            "Time the agent spent on one ext_proc message, by phase.",
            ["phase"],
            buckets=_PHASE_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "edge_agent_upstream_latency_seconds",
            "From forwarding the request to the provider's response headers.",
            ["provider"],
            buckets=_UPSTREAM_BUCKETS,
            registry=r,
        )
        self.target_state = Gauge(
            "edge_agent_target_circuit_state",
            "A routing target's circuit: 0 closed, 1 half-open (one probe request), 2 open "
            "(skipped until it cools down). With workers: the worst of them.",
            ["target"],
            registry=r,
            # live: a worker that died with a circuit open must not hold the value.
            multiprocess_mode="livemax",
        )
        self.budget_usd = Gauge(
            "edge_agent_budget_usd",
            "A tenant's configured budget, by period (day: UTC day, month: calendar month).",
            ["tenant", "period"],
            registry=r,
            multiprocess_mode="max",
        )
        self.guardrail_findings = Counter(
            "edge_agent_guardrail_findings",
            "Personal data found by the guardrails, by entity type, direction and action "
            "(counts only: values are never recorded).",
            ["entity", "direction", "action", "tenant"],
            registry=r,
        )
        self.guardrail_refusals = Counter(
            "edge_agent_guardrail_refusals",
            "Requests refused by the guardrails: reason pii (action block) or deny (rule).",
            ["reason", "rule", "tenant"],
            registry=r,
        )
        self.trace_spans = Counter(
            "edge_agent_trace_spans",
            "Spans of sampled traces, by what became of them: exported, dropped (the "
            "export queue was full), export_failed (the collector did not take them).",
            ["outcome"],
            registry=r,
        )
        self.tokens = Counter(
            "edge_agent_tokens",
            "Tokens the providers reported in their usage, by kind (input/output).",
            ["model", "provider", "kind", "tenant"],
            registry=r,
        )
        self.cost = Counter(
            "edge_agent_cost_usd",
            "Spent at the configured prices (input/output per million tokens).",
            ["model", "provider", "tenant"],
            registry=r,
        )
        self.cost_saved = Counter(
            "edge_agent_cost_saved_usd",
            "What cache hits saved: the cached answer's usage at the prices of the model's "
            "first target.",
            ["model", "tier", "tenant"],
            registry=r,
        )
        self.usage_unpriced = Counter(
            "edge_agent_usage_unpriced",
            "Answers metered at an unknown price (the provider model has no prices "
            "configured): their cost is missing from edge_agent_cost_usd.",
            ["model", "provider"],
            registry=r,
        )
        self.usage_missing = Counter(
            "edge_agent_usage_missing",
            "Answers whose token usage the agent could not read (e.g. a stream without "
            "stream_options.include_usage): their tokens and cost are not counted.",
            ["model", "provider"],
            registry=r,
        )
        self.routing_decisions = Counter(
            "edge_agent_routing_decisions",
            "Targets chosen for requests, and why: the model's strategy, 'pinned' (client "
            "header), or 'all_unhealthy' (every eligible target unhealthy: best one tried).",
            ["model", "target", "reason"],
            registry=r,
        )
        self.coalesced = Counter(
            "edge_agent_coalesced",
            "Requests that waited for an identical request in flight: 'served' from its "
            "answer, or 'fell_through' (no cacheable answer, or the wait ran out).",
            ["outcome"],
            registry=r,
        )
        self.broken_streams = Counter(
            "edge_agent_broken_streams",
            "Translated answer streams that ended before their proper end (provider cut or "
            "error event). Bytes already reached the client, so they are never retried.",
            ["target"],
            registry=r,
        )
        self.failover_attempts = Counter(
            "edge_agent_failed_attempts",
            "Attempts on a failover chain that failed (outcome: HTTP status, or 'connect' "
            "for refused/reset connections); Envoy retries them on the chain's next target.",
            ["target", "outcome"],
            registry=r,
        )
        self.streams = _Streams(
            Gauge(
                "edge_agent_ext_proc_streams",
                "ext_proc streams open now.",
                registry=r,
                multiprocess_mode="livesum",
            ),
            Counter(
                "edge_agent_worker_streams",
                "ext_proc streams handled, by worker process index ('0' without workers): "
                "how the shared gRPC port spreads Envoy's connections over the workers.",
                ["worker"],
                registry=r,
            ).labels(os.environ.get(WORKER_INDEX_ENV, "0")),
        )
        self.limit_refusals = Counter(
            "edge_agent_limit_refusals",
            "Requests refused by a limit or budget, by tenant and reason (requests, "
            "concurrency, tokens, budget_day, budget_month).",
            ["tenant", "reason"],
            registry=r,
        )
        self.limits_fallback = Counter(
            "edge_agent_limits_fallback",
            "Admissions decided by this process alone (its share of each limit) because "
            "Redis did not answer in time.",
            registry=r,
        )
        # The last value any process saw; every process sees the same Redis-backed spend.
        self.budget_remaining = Gauge(
            "edge_agent_budget_remaining_usd",
            "What is left of the tenant's daily budget, reservations in flight included "
            "(tenants with a daily budget).",
            ["tenant"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.stream_errors = Counter(
            "edge_agent_ext_proc_stream_errors",
            "ext_proc streams that ended with an error in the agent.",
            registry=r,
        )
        for metric in vars(self).values():
            if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                _remember_children(metric)

    def track(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Keep `gauge` equal to `read()` (a size the agent can compute at any time).

        One process: computed at scrape time, always exact. Multiprocess mode: the
        scrape runs in whichever worker answers and reads the others' files, so each
        worker writes its own value from refresh() (periodically and before a scrape).
        """
        if self.multiprocess:
            self._tracked.append((gauge, read))
            gauge.set(read())
        else:
            gauge.set_function(read)

    def refresh(self) -> None:
        """Write the tracked gauges' current values (multiprocess mode; no-op otherwise)."""
        for gauge, read in self._tracked:
            gauge.set(read())

    def exposition_registry(self) -> CollectorRegistry:
        """What /metrics exposes: this registry, or the merge of every worker's files."""
        path = multiprocess_dir()
        if path is None:
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=path)
        return merged
