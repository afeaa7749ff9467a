"""Shared fixtures; puts this folder on ``sys.path`` so tests can import ``diffusion_helpers``
(pytest runs with ``--import-mode=importlib``, under which test modules cannot import each other).
"""

import sys
from pathlib import Path

import jaxtyping
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def runtime_checks_only():
    """Turn the test suite's jaxtyping/beartype checking off, as it is at run time, so that the
    package's own input validation is what answers bad input."""
    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", before)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests run many small tensor ops; on a shared 2-core machine intra-op threads only
    add synchronisation (and stall badly when the cores are busy), so use one, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
