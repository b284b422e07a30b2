"""Token counts of texts for the usage a response reports, remembered per ingress replica.

Counting needs the served model's tokenizer, which lives on the ``Reranker`` replicas: one call per
request for the texts not seen before. A text's count never changes for a given model, so a bounded
LRU (keyed by a 16-byte digest, not the text) spares the replicas most calls; a fully cached
request with known texts then touches no model replica at all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence


class TokenCounter:
    def __init__(self, count: Callable[[list[str]], Awaitable[list[int]]], capacity: int = 50_000):
        self._count, self._capacity = count, capacity
        self._known: OrderedDict[bytes, int] = OrderedDict()

    async def counts(self, texts: Sequence[str]) -> dict[str, int]:
        """Each distinct text -> its token count; one ``count`` call for those not remembered."""
        found: dict[str, int] = {}
        missing: list[tuple[str, bytes]] = []
        for text in dict.fromkeys(texts):
            key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
            n = self._known.get(key)
            if n is None:
                missing.append((text, key))
            else:
                self._known.move_to_end(key)
                found[text] = n
        if missing:
            got = await self._count([text for text, _ in missing])
            for (text, key), n in zip(missing, got, strict=True):
                found[text] = self._known[key] = int(n)
            while len(self._known) > self._capacity:
                self._known.popitem(last=False)
        return found
