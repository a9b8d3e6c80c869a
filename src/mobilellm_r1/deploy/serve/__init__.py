"""`mobilellm-r1 serve`: an OpenAI-compatible HTTP server over the continuous-batching engine.

`protocol.py` (request bodies, error shape), `worker.py` (the engine's thread), `metrics.py`
(Prometheus) and `app.py` (the FastAPI routes). `build_server` puts them together;
`serve` runs it under uvicorn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .worker import EngineWorker


@dataclass
class Server:
    app: FastAPI
    worker: EngineWorker


def build_server(
    model: Any, tokenizer: Any, *, name: str, api_key: str | None = None, engine_options: dict | None = None
) -> Server:
    """The app and its (not yet started) engine worker for a loaded model."""
    from ..batching import BatchingEngine
    from .app import ServedModel, create_app
    from .metrics import ServerMetrics
    from .worker import EngineWorker

    options = engine_options or {}

    def make_engine() -> BatchingEngine:  # compiled steps are built before the first request
        engine = BatchingEngine(model, tokenizer, **options)
        engine.warmup()
        return engine

    worker = EngineWorker(make_engine)
    cfg = model.config
    served = ServedModel(name, tokenizer, cfg.max_position_embeddings, list(cfg.eos_token_id))
    metrics = ServerMetrics(lambda: worker.engine.stats)
    return Server(create_app(worker, served, metrics, api_key), worker)


def serve(server: Server, host: str, port: int, log_level: str = "info") -> None:
    """Run the server until interrupted (the engine thread starts first, stops last)."""
    import uvicorn

    server.worker.start()
    try:
        uvicorn.run(server.app, host=host, port=port, log_level=log_level)
    finally:
        server.worker.stop()
