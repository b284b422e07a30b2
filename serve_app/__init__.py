"""Model side of rerank-stream: the reranker engine, its Ray Serve deployment and HTTP API."""
