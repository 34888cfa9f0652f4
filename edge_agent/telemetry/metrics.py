"""Prometheus metrics. One registry per Agent so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond resolution: the whole ext_proc budget is ~1 ms per request.
_PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edge_agent_requests",
            "HTTP requests seen by the agent, by endpoint, client-facing model, provider "
            "and final status ('-' when the agent answered itself).",
            ["endpoint", "model", "provider", "status"],
            registry=r,
        )
        self.cache_results = Counter(
            "edge_agent_cache_results",
            "Cache decisions: hit, semantic-hit, miss or bypass.",
            ["endpoint", "result"],
            registry=r,
        )
        self.cache_stores = Counter(
            "edge_agent_cache_stores",
            "Answers stored in the exact cache, or why not.",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.cache_entries = Gauge(
            "edge_agent_cache_entries", "Entries in the exact cache.", registry=r
        )
        self.cache_bytes = Gauge(
            "edge_agent_cache_bytes", "Response bytes held by the exact cache.", registry=r
        )
        self.semantic_lookups = Counter(
            "edge_agent_semantic_lookups",
            "Semantic tier lookups: hit, miss, refused (a candidate above the threshold "
            "that the verifier rejected), shadow_hit (shadow mode), store_only "
            "(cache-control: no-cache), unservable (entry dropped), error (embedder) or "
            "timeout (over cache.semantic.lookup_timeout_ms).",
            ["outcome"],
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
            "edge_agent_semantic_entries", "Entries in the semantic tier.", registry=r
        )
        self.semantic_bytes = Gauge(
            "edge_agent_semantic_bytes",
            "Answer bytes the semantic tier keeps alive (cache.semantic.max_bytes).",
            registry=r,
        )
        self.semantic_partitions = Gauge(
            "edge_agent_semantic_partitions",
            "FAISS indexes (one per model/instructions/tools/parameters/history context).",
            registry=r,
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
        self.tokens = Counter(
            "edge_agent_tokens",
            "Tokens the providers reported in their usage, by kind (input/output).",
            ["model", "provider", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "edge_agent_cost_usd",
            "Spent at the configured prices (input/output per million tokens).",
            ["model", "provider"],
            registry=r,
        )
        self.cost_saved = Counter(
            "edge_agent_cost_saved_usd",
            "What cache hits saved: the cached answer's usage at the prices of the model's "
            "first target.",
            ["model", "tier"],
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
        self.streams = Gauge(
            "edge_agent_ext_proc_streams", "ext_proc streams open now.", registry=r
        )
        self.stream_errors = Counter(
            "edge_agent_ext_proc_stream_errors",
            "ext_proc streams that ended with an error in the agent.",
            registry=r,
        )
