"""Device binding: which customer, org and user a device belongs to (legacy `sys_user`).

Watches send the ids as empty strings and phone relays send none, so, like the legacy
upload path, we look the device up: `sys_user` (device_sn, not deleted; its id is the user)
-> `sys_user_org` (the user's org) -> `sys_org_units` (customer = the first non-zero id in the
org's `ancestors`, else the org's own id). No match binds to customer 0 with no org or user.
Values the message carries win, field by field.

Unlike the legacy path (one query per reading), a flush looks up only the SNs its cache does
not know, in one query, and caches misses too, so steady state costs no query at all.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, inspect, text

from consumer.pipeline.ledger import Ledger
from schemas.record import HealthRecord

log = logging.getLogger(__name__)

BINDING_TABLES = ("sys_user", "sys_user_org", "sys_org_units")
LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Binding:
    customer_id: int
    org_id: int | None
    user_id: int | None


UNBOUND = Binding(0, None, None)


def customer_of(org_id: int, ancestors: str | None) -> int:
    """The first non-zero id in `ancestors` (root first), else the org itself."""
    for part in (ancestors or "").split(","):
        part = part.strip()
        if part.isdigit() and int(part) != 0:
            return int(part)
    return org_id


def bind(record: HealthRecord, binding: Binding) -> HealthRecord:
    """A copy of the record with its missing ids filled; ids the message carried are kept.

    The readable reference of `bind_in_place` (the unit tests compare the two).
    """
    customer = record.customer_id if record.customer_id is not None else binding.customer_id
    org = record.org_id if record.org_id is not None else binding.org_id
    user = record.user_id if record.user_id is not None else binding.user_id
    if (customer, org, user) == (record.customer_id, record.org_id, record.user_id):
        return record
    return dataclasses.replace(record, customer_id=customer, org_id=org, user_id=user)


_set = object.__setattr__


def bind_in_place(records: Iterable[HealthRecord], bindings: dict[str, Binding]) -> None:
    """Fill the missing ids of each record whose SN is in `bindings`, in place.

    A record belongs to one batch from decode to flush, and the flush binds it once,
    before the rules, the DB or Redis read its ids; nothing holds it hashed. So setting
    three slots of the frozen record is safe, and it saves the 24-field copy that
    `dataclasses.replace` made for every watch reading (a large share of the per-reading
    CPU; docs/performance.md, "Figures behind the design notes").
    """
    get = bindings.get
    for r in records:
        if r.customer_id is not None and r.org_id is not None and r.user_id is not None:
            continue
        b = get(r.device_sn)
        if b is None:
            continue
        if r.customer_id is None:
            _set(r, "customer_id", b.customer_id)
        if r.org_id is None and b.org_id is not None:
            _set(r, "org_id", b.org_id)
        if r.user_id is None and b.user_id is not None:
            _set(r, "user_id", b.user_id)


def unbound_sns(records: Iterable[HealthRecord]) -> set[str]:
    """The SNs of the records that lack any of the three ids: what a flush looks up."""
    return {
        r.device_sn
        for r in records
        if r.customer_id is None or r.org_id is None or r.user_id is None
    }


class BindingCache:
    """SN -> Binding with a TTL; unbound devices are cached for a (shorter) negative TTL."""

    def __init__(
        self, ttl_s: float, negative_ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Binding]] = {}

    def get_many(self, sns: Iterable[str]) -> tuple[dict[str, Binding], list[str]]:
        """(cached bindings, SNs to look up)."""
        now = self._clock()
        found: dict[str, Binding] = {}
        missing: list[str] = []
        with self._lock:
            for sn in sns:
                entry = self._entries.get(sn)
                if entry is not None and entry[0] > now:
                    found[sn] = entry[1]
                else:
                    missing.append(sn)
        return found, missing

    def put_many(self, bindings: dict[str, Binding]) -> None:
        now = self._clock()
        with self._lock:
            for sn, b in bindings.items():
                ttl = self._negative_ttl_s if b is UNBOUND else self._ttl_s
                self._entries[sn] = (now + ttl, b)
            if len(self._entries) > 200_000:  # bounded: drop what has expired
                for sn in [s for s, (until, _) in self._entries.items() if until <= now]:
                    del self._entries[sn]


_LOOKUP = """
SELECT u.device_sn, u.id, uo.org_id, o.ancestors
FROM sys_user u
JOIN sys_user_org uo ON uo.user_id = u.id AND uo.is_deleted = 0
JOIN sys_org_units o ON o.id = uo.org_id AND o.is_deleted = 0
WHERE u.is_deleted = 0 AND u.device_sn IN :sns
ORDER BY u.device_sn, u.id, uo.id
"""


def _as_sys_user_compares(sn: str) -> str:
    """An SN as the legacy lookup matched it: `sys_user.device_sn`'s collation (the
    legacy's utf8mb4 *_ci, PAD SPACE) ignores case and trailing blanks, so the query finds
    `abc ` for `ABC`; the answer is mapped back to what was asked the same way (S5)."""
    return sn.rstrip(" ").casefold()


class DeviceDirectory:
    """Looks devices up in the legacy tables; binds everything to customer 0 without them."""

    def __init__(self, engine: Engine, cache: BindingCache, ledger: Ledger) -> None:
        self._engine = engine
        self._cache = cache
        self._ledger = ledger
        self._tables: bool | None = None  # unknown until the first lookup

    def _has_tables(self) -> bool:
        if self._tables is None:
            names = set(inspect(self._engine).get_table_names())
            self._tables = all(t in names for t in BINDING_TABLES)
            if not self._tables:
                log.warning(
                    "device binding tables are missing; readings without ids get customer 0",
                    extra={"tables": [t for t in BINDING_TABLES if t not in names]},
                )
        return self._tables

    def bindings(self, sns: set[str]) -> dict[str, Binding]:
        """Bindings of `sns`: from the cache, the rest in one query per 500 SNs.

        Raises the driver's error on a DB failure; the caller retries like any DB write.
        """
        found, missing = self._cache.get_many(sns)
        if not missing:
            self._ledger.bound(hits=len(found), misses=0, queries=0)
            return found
        queries = 0
        looked_up = dict.fromkeys(missing, UNBOUND)
        if self._has_tables():
            query = text(_LOOKUP).bindparams(bindparam("sns", expanding=True))
            with self._engine.connect() as conn:
                for start in range(0, len(missing), LOOKUP_CHUNK):
                    queries += 1
                    chunk = missing[start : start + LOOKUP_CHUNK]
                    asked: dict[str, list[str]] = {}
                    for sn in chunk:
                        asked.setdefault(_as_sys_user_compares(sn), []).append(sn)
                    seen: set[str] = set()
                    for sn, user_id, org_id, ancestors in conn.execute(query, {"sns": chunk}):
                        folded = _as_sys_user_compares(str(sn))
                        if folded in seen:  # several matches: the lowest user, then org link
                            continue
                        seen.add(folded)
                        binding = Binding(
                            customer_of(int(org_id), ancestors), int(org_id), int(user_id)
                        )
                        for requested in asked.get(folded, ()):
                            looked_up[requested] = binding
        self._cache.put_many(looked_up)
        self._ledger.bound(hits=len(found), misses=len(missing), queries=queries)
        return {**found, **looked_up}
