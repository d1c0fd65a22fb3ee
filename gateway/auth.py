"""Optional API tokens: a request header checked against a configured set.

Tokens are held and compared as SHA-256 digests, so neither the process memory nor the
comparison's timing gives a token away. No tokens configured = the check is off (the
legacy firmware sends none; deploy tokens where the firmware can).
"""

from __future__ import annotations

import hashlib


class TokenCheck:
    def __init__(self, header: str, digests: frozenset[bytes]) -> None:
        self.header = header.lower()  # ASGI header names arrive lower-cased
        self._digests = digests

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def allows(self, presented: str | None) -> bool:
        if not self._digests:
            return True
        if not presented:
            return False
        return hashlib.sha256(presented.strip().encode()).digest() in self._digests
