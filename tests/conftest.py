"""Fixtures shared by every test package; the helpers themselves live in :mod:`tests.helpers`."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tests.helpers.speech import synthesize  # noqa: E402 - after the offline switches

# The `redis_server` fixture (a real redis-server on a free loopback port): tests/redisd.py.
pytest_plugins = ("tests.redisd",)


@pytest.fixture
def speech_factory() -> Callable[..., np.ndarray]:
    """``speech_factory(text, voice=..., speed_wpm=..., pitch=...)`` -> float32 speech (skips without espeak)."""
    return synthesize
