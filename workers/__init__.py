"""Kafka side of rerank-stream: consume jobs, cache scores, publish results, commit offsets.

Importing this package imports no Kafka client; each module pulls in what it needs.
"""
