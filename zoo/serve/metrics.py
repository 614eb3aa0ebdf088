"""Prometheus metrics of one server (prometheus-client): requests by route and status, latency, batches, queue.

Each app has its own :class:`prometheus_client.CollectorRegistry`, so two apps in one process (tests, embedding)
do not share counters. With ``workers > 1`` each worker process counts its own requests; ``/metrics`` answers
with the numbers of the worker that took the scrape.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The server's counters; also the batcher's :class:`~zoo.serve.batching.BatchObserver`.

    Args:
        max_batch_size: the largest batch (sets the batch-size histogram's buckets).
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "zoo_requests", "HTTP requests by route and status code", ["route", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "zoo_request_seconds", "request latency", ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "zoo_batch_size", "images per model call", buckets=tuple(range(1, max_batch_size + 1)),
            registry=self.registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "zoo_batch_seconds", "duration of one model call", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.depth = Gauge("zoo_queue_depth", "images waiting for the model", registry=self.registry)

    def request_done(self, route: str, code: int, seconds: float) -> None:
        self.requests.labels(route=route, code=str(code)).inc()
        self.latency.labels(route=route).observe(seconds)

    def batch_done(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def queue_depth(self, depth: int) -> None:
        self.depth.set(depth)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


__all__ = ["ServerMetrics"]
