"""tests/loop_contract.py's scenarios against the fake consumer (no services)."""

from __future__ import annotations

from tests.loop_contract import Backend, FakeBackend, LoopContract


class TestFakeConsumer(LoopContract):
    def make_backend(self) -> Backend:
        return FakeBackend()
