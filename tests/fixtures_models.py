"""Session fixtures: tiny random-weight models built once per test session (a few seconds)."""

from __future__ import annotations

import os

import pytest

from tests.support.synthetic_models import (
    build_tiny_bi_encoder,
    build_tiny_qwen3_reranker,
    build_tiny_qwen3_seq_cls,
    build_tiny_seq_cls,
)

# Never reach for a model hub from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    return build_tiny_qwen3_reranker(tmp_path_factory.mktemp("tiny-qwen3-reranker"))


@pytest.fixture(scope="session")
def tiny_qwen_seq_cls_dir(tmp_path_factory, tiny_qwen_dir):
    """tiny_qwen_dir converted to a one-label seq-cls checkpoint (head = lm_head[yes] - lm_head[no])."""
    return build_tiny_qwen3_seq_cls(tmp_path_factory.mktemp("tiny-qwen3-seq-cls"), tiny_qwen_dir)


@pytest.fixture(scope="session")
def tiny_seq_cls_dir(tmp_path_factory):
    return build_tiny_seq_cls(tmp_path_factory.mktemp("tiny-seq-cls"))


@pytest.fixture(scope="session")
def tiny_bi_encoder_dir(tmp_path_factory):
    return build_tiny_bi_encoder(tmp_path_factory.mktemp("tiny-bi-encoder"))
