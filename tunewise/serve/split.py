"""A/B traffic split: which variant answers a request sent to the split's model name (``ab`` by default).

A request that names a user (``user`` / ``safety_identifier``) is assigned by a hash of it, so one user always sees
the same variant (what an A/B test of a conversational model needs); other requests are assigned at random.
"""

from __future__ import annotations

import hashlib
import random
import threading
from typing import Mapping


def parse_split(text: str) -> dict[str, float]:
    """``"base=1,tuned=3"`` -> ``{"base": 1.0, "tuned": 3.0}`` (weights, normalised later)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"--split {text!r}: {value!r} is not a number; write it as name=weight,name=weight") from None
    return weights


class TrafficSplit:
    def __init__(self, weights: Mapping[str, float], *, name: str = "ab", seed: int | None = None) -> None:
        bad = {k: w for k, w in weights.items() if not w >= 0}
        if not weights or bad or sum(weights.values()) <= 0:
            raise ValueError(f"a traffic split needs non-negative weights with a positive sum, got {dict(weights)}")
        total = sum(weights.values())
        self.name = name
        self.weights = {k: w / total for k, w in weights.items()}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _pick(self, u: float) -> str:
        cumulative = 0.0
        for variant, w in self.weights.items():
            cumulative += w
            if u < cumulative:
                return variant
        return next(v for v, w in reversed(list(self.weights.items())) if w > 0)

    def choose(self, user: str | None = None) -> tuple[str, str]:
        """(variant, how it was assigned: "user-hash" or "random")."""
        if user:
            digest = hashlib.sha256(f"{self.name}\0{user}".encode()).digest()
            return self._pick(int.from_bytes(digest[:8], "big") / 2**64), "user-hash"
        with self._lock:
            return self._pick(self._rng.random()), "random"
