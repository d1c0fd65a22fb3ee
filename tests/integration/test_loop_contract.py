"""tests/loop_contract.py's scenarios against the real broker: the fake is held to it."""

from __future__ import annotations

import pytest

from tests.integration.stack import KAFKA
from tests.loop_contract import Backend, KafkaBackend, LoopContract

pytestmark = pytest.mark.integration


class TestKafka(LoopContract):
    def make_backend(self) -> Backend:
        return KafkaBackend(KAFKA)
