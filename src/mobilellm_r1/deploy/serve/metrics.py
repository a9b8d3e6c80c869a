"""Prometheus metrics of the server (`GET /metrics`), in a registry of their own so two servers
in one process (tests) do not collide."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class ServerMetrics:
    """Requests by endpoint and status, prompt and generated tokens, queue depth and running
    requests (read from the engine at scrape time), time to first token, time per output token
    and request duration."""

    def __init__(self, engine_stats: Callable[[], object]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mobilellm_requests", "Finished requests", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter(
            "mobilellm_prompt_tokens", "Prompt tokens of accepted requests", registry=r
        )
        self.generated_tokens = Counter("mobilellm_generation_tokens", "Tokens generated", registry=r)
        self.ttft = Histogram(
            "mobilellm_time_to_first_token_seconds",
            "Request arrival to its first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "mobilellm_time_per_output_token_seconds",
            "Mean time between a request's tokens after the first",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "mobilellm_request_duration_seconds",
            "Request arrival to its last token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        waiting = Gauge("mobilellm_requests_waiting", "Requests queued for admission", registry=r)
        running = Gauge("mobilellm_requests_running", "Requests in the running batch", registry=r)
        waiting.set_function(lambda: float(getattr(engine_stats(), "waiting", 0)))
        running.set_function(lambda: float(getattr(engine_stats(), "running", 0)))

    def render(self) -> bytes:
        return generate_latest(self.registry)
