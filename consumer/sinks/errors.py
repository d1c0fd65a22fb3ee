"""One error hierarchy for every sink: how a failure is handled follows from its class.

- `Retryable`: the sink cannot take the batch now (its dependency is down, not ready,
  or the rules it needs are not loaded). A required sink is retried with backoff, forever,
  and health names its dependency; the partition pauses behind it. `Contention` is
  retried too, but the dependency is up (a deadlock, a busy pool).
- `RowFault`: the values of some row are at fault. The flush bisects the batch until the
  row stands alone and dead-letters it with the fault's `reason`; its batch-mates are
  stored.
- `Bug`: ours or a driver's. Bisected like a row fault; a row that fails alone is
  dead-lettered `internal_error` (replayable once the bug is fixed) and logged as
  critical. An exception that is no `SinkError` at all counts as a bug.
"""

from __future__ import annotations

from consumer.pipeline.reasons import DeadLetterReason


class SinkError(Exception):
    """Root of what a sink raises on purpose."""


class Retryable(SinkError):
    """Not now: retried with backoff, never dropped; the dependency is reported down."""


class Contention(Retryable):
    """Lock wait, deadlock or no free pooled connection: retried; the dependency is up."""


class RowFault(SinkError):
    """Some row's values were refused: isolated by bisection and dead-lettered."""

    reason = DeadLetterReason.DB_REJECTED


class Bug(SinkError):
    """A failure retrying cannot fix and no value explains (a statement we built wrong)."""


def fault_of(err: Exception) -> SinkError:
    """The class of any exception a sink let escape: its own, else a bug."""
    return err if isinstance(err, SinkError) else Bug(f"{type(err).__name__}: {err}")
