"""What the consumer and the gateway both need and neither owns: structured logging and
the `*KAFKA_CLIENT_*` pass-through. Depends on no first-party package, so the gateway can
use it without depending on the consumer (tests/unit/test_layout.py guards both)."""
