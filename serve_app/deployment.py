"""The ``Reranker`` deployment: one replica = one model copy on one device.

Concurrent jobs (a job = one query and its document list, never a single document) are merged
into one ``engine.score_many`` call, where the engine's token budget forms the micro-batches. The
batches come from ``PriorityBatcher`` (serve_app/priority_batching.py), not ``@serve.batch``: the
highest ``ScoreRequest.priority`` waiting goes first (moderation before a recommendation burst). The
forward pass runs in a one-thread executor so the event loop keeps accepting requests, and the next
batch forms while the current one computes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from schemas.scoring import ScoreResult
from schemas.settings import DEFAULT_MODEL, Settings
from serve_app.engine import ModelInfo, ScoreRequest, load_engine
from serve_app.priority_batching import PriorityBatcher

log = logging.getLogger("ray.serve")


def torch_threads(settings: Settings) -> int:
    """Intra-op threads of one replica: explicit setting, else its CPU reservation, at least 1."""
    return settings.serve.torch_threads or max(1, int(settings.serve.num_cpus))


class Reranker:
    """Methods called through the deployment handle by the HTTP API and the Kafka workers."""

    def __init__(self, settings_json: str, model_key: str = DEFAULT_MODEL):
        import torch

        settings = Settings.model_validate_json(settings_json)
        torch.set_num_threads(torch_threads(settings))
        # model_key: which configured model this deployment serves (model.* or one of model.extra_models)
        self.engine = load_engine(settings.model.spec(model_key))  # raises: the replica never becomes ready
        s = settings.serve
        self._batcher = PriorityBatcher(self._batched, s.max_batch_size, s.batch_wait_timeout_s, s.max_batch_documents)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._batch_jobs: Counter[int] = Counter()
        log.info(
            "Reranker replica pid=%d ready: %s on %s (%d torch threads)",
            os.getpid(),
            self.engine.info.fingerprint,
            self.engine.info.device,
            torch.get_num_threads(),
        )

    async def score(self, request: ScoreRequest) -> ScoreResult:
        """Scores of one job's documents, in input order (chunk mode: with each one's best window)."""
        return await self._batcher.submit(request)

    async def _batched(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        self._batch_jobs[len(requests)] += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.engine.score_many, requests)

    def info(self) -> ModelInfo:
        return self.engine.info

    def default_instruction(self) -> str | None:
        """The instruction the model uses when a request brings none (part of the cache key)."""
        return self.engine.default_instruction

    def count_tokens(self, texts: list[str]) -> list[int]:
        return self.engine.count_tokens(texts)

    def batch_stats(self) -> dict[int, int]:
        """Jobs per batch -> number of batches, since the replica started (tests, debugging)."""
        return dict(self._batch_jobs)

    def busy_seconds(self) -> float:
        """Seconds spent computing batches since the replica started (saturation = its growth per second)."""
        return self._batcher.busy_s
