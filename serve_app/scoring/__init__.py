"""The one scoring core both doors call: the Kafka worker (threads) and the HTTP ingress (asyncio).

request -> one cache MGET -> only the misses go through a ``ScoreClient`` -> pipelined cache fill
-> best-first order. Imports neither torch nor Kafka: the worker loads it without the engine.
"""

from serve_app.scoring.cache import CacheQuery, ScoreCache
from serve_app.scoring.client import ScoreClient
from serve_app.scoring.core import Lookup, Scored, ScoringCore

__all__ = ["CacheQuery", "Lookup", "ScoreCache", "ScoreClient", "Scored", "ScoringCore"]
