"""Prometheus metrics of the local server, exported on the REST port like TF Serving's
`--monitoring_config_file` (`prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }`).

Each server owns its own registry, so several servers in one process (tests, benchmarks) do not
share counters.
"""
from __future__ import annotations

import prometheus_client as prom

METRICS_PATH = "/monitoring/prometheus/metrics"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    """Request counts by status, request latency, batch sizes and loaded versions."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "sicot_serving_requests", "Requests by front end, method and canonical status code",
            ["model", "api", "method", "status"], registry=self.registry)
        self.latency = prom.Histogram(
            "sicot_serving_request_latency_seconds", "Request latency inside the server",
            ["model", "api", "method"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = prom.Histogram(
            "sicot_serving_batch_size", "Rows per signature call (merged batches when batching is on)",
            ["model", "signature"], buckets=_BATCH_BUCKETS, registry=self.registry)
        self.version_loaded = prom.Gauge(
            "sicot_serving_model_version_loaded", "1 for each version currently loaded",
            ["model", "version"], registry=self.registry)
        self.failed_versions = prom.Gauge(
            "sicot_serving_model_versions_failed", "Versions on disk whose load failed",
            ["model"], registry=self.registry)

    def observe_request(self, api: str, method: str, status: str, seconds: float) -> None:
        self.requests.labels(self.model_name, api, method, status).inc()
        self.latency.labels(self.model_name, api, method).observe(seconds)

    def observe_batch(self, signature: str, rows: int) -> None:
        self.batch_size.labels(self.model_name, signature).observe(rows)

    def set_loaded_versions(self, versions, seen_versions) -> None:
        for v in seen_versions:
            self.version_loaded.labels(self.model_name, str(v)).set(1 if v in versions else 0)

    def exposition(self) -> bytes:
        return prom.generate_latest(self.registry)

    content_type = prom.CONTENT_TYPE_LATEST
