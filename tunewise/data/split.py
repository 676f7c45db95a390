"""Seeded, reproducible train / validation / test splits, stratified by a label when one is named."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any, Callable, Hashable, Sequence, TypeVar

from tunewise.catalog import _
from tunewise.config import SplitConfig
from tunewise.errors import DataError

T = TypeVar("T")
SPLITS = ("train", "val", "test")


def split_sizes(n: int, split: SplitConfig, *, has_test: bool = False) -> dict[str, int]:
    """How many of ``n`` examples go to each split. With ``has_test`` (a test file is given) nothing is carved out
    for test and the train/val ratios are rescaled to sum to 1."""
    if split.is_counts:
        sizes = {"train": int(split.train), "val": int(split.val), "test": 0 if has_test else int(split.test)}
        if sizes["val"] + sizes["test"] > n:
            raise DataError(_("data.split asks for {val} validation + {test} test examples but only {n} are "
                              "left after cleaning; lower the counts").format(
                                  val=sizes['val'], test=sizes['test'], n=n))
        sizes["train"] = min(sizes["train"], n - sizes["val"] - sizes["test"])
        return sizes
    ratios = {"train": split.train, "val": split.val, "test": 0.0 if has_test else split.test}
    total = sum(ratios.values()) or 1.0
    sizes = {}
    for name in ("test", "val"):
        r = ratios[name] / total
        k = round(n * r)
        if r > 0 and k == 0 and n >= 3:  # a requested split is never left empty on a small dataset
            k = 1
        sizes[name] = k
    sizes["train"] = max(0, n - sizes["test"] - sizes["val"])
    return sizes


def _largest_remainder(total: int, weights: dict[Hashable, int], caps: dict[Hashable, int]) -> dict[Hashable, int]:
    """Share ``total`` across groups in proportion to ``weights`` (whole numbers, each within its cap)."""
    wsum = sum(weights.values())
    if wsum == 0 or total == 0:
        return {g: 0 for g in weights}
    exact = {g: total * w / wsum for g, w in weights.items()}
    alloc = {g: min(caps[g], math.floor(x)) for g, x in exact.items()}
    order = sorted(weights, key=lambda g: (-(exact[g] - math.floor(exact[g])), -weights[g], str(g)))
    left = total - sum(alloc.values())
    while left > 0:
        progressed = False
        for g in order:
            if left and alloc[g] < caps[g]:
                alloc[g] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return alloc


def split_items(
    items: Sequence[T],
    split: SplitConfig,
    *,
    seed: int,
    label_of: Callable[[T], Any] | None = None,
    has_test: bool = False,
) -> dict[str, list[T]]:
    """Shuffle with ``seed`` and cut into splits; with ``label_of`` each label's share is the same in every split.
    Items that a count-based split leaves over go to ``"unused"``. Same input + seed -> same split."""
    n = len(items)
    sizes = split_sizes(n, split, has_test=has_test)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    groups: dict[str, list[int]] = defaultdict(list)
    for i in order:
        groups[_group_key(label_of(items[i])) if label_of else ""].append(i)
    left = {g: len(ix) for g, ix in groups.items()}
    taken: dict[str, dict[str, int]] = {}
    for name in ("test", "val", "train"):
        alloc = _largest_remainder(sizes[name], {g: len(ix) for g, ix in groups.items()}, left)
        taken[name] = alloc
        for g, k in alloc.items():
            left[g] -= k
    position = {i: p for p, i in enumerate(order)}
    out: dict[str, list[int]] = {"train": [], "val": [], "test": [], "unused": []}
    for g, ix in groups.items():
        a, b, c = taken["test"][g], taken["val"][g], taken["train"][g]
        out["test"] += ix[:a]
        out["val"] += ix[a : a + b]
        out["train"] += ix[a + b : a + b + c]
        out["unused"] += ix[a + b + c :]
    return {name: [items[i] for i in sorted(ix, key=position.__getitem__)] for name, ix in out.items()}


def _group_key(label: Any) -> str:
    return "" if label is None else str(label)
