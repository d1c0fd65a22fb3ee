"""The malloc arena cap is set on glibc and leaves an explicit MALLOC_ARENA_MAX alone."""

import platform

import pytest

from consumer.memory import limit_malloc_arenas


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


def test_glibc_accepts_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    expected = platform.libc_ver()[0] == "glibc"
    assert limit_malloc_arenas() is expected
