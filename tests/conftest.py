"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def engine_cache(tmp_path_factory, monkeypatch):
    """Each test remembers engine choices in a folder of its own (never the user's cache), and "auto" chooses among
    ONNX Runtime and torch (the OpenVINO tests, tests/test_openvino.py, undo that: OpenVINO and NNCF take seconds to
    import and convert, too long for every test that builds a fast path)."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.mktemp("zoo-cache")))
    monkeypatch.setenv("ZOO_ENGINES", "onnxruntime,compile,eager")


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny tensors: the suite shares 2 cores, where two OpenMP threads stall on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
