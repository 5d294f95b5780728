"""Prometheus metrics of one server (its own registry, so servers in one process never mix):
requests by route and status, tokens, latency and time to first token, queue and batch."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], float], batch_size: Callable[[], float]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tunesmith_requests", "HTTP requests answered", ["path", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "tunesmith_prompt_tokens", "prompt tokens of completed requests", registry=r
        )
        self.completion_tokens = Counter(
            "tunesmith_completion_tokens", "tokens generated", registry=r
        )
        self.latency = Histogram(
            "tunesmith_request_latency_seconds",
            "time from arrival to the last byte",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tunesmith_time_to_first_token_seconds",
            "time from arrival to the first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        Gauge("tunesmith_queue_depth", "sequences waiting for the model", registry=r).set_function(
            queue_depth
        )
        Gauge("tunesmith_batch_size", "sequences being decoded now", registry=r).set_function(
            batch_size
        )

    def observe(self, entry: dict) -> None:
        """Count one finished request from its request-log entry."""
        self.requests.labels(entry["path"], str(entry["status"])).inc()
        self.latency.labels(entry["path"]).observe(entry["latency_s"])
        self.prompt_tokens.inc(entry.get("prompt_tokens", 0))
        self.completion_tokens.inc(entry.get("completion_tokens", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
