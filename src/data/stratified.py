"""The seeded, stratified split, giving scikit-learn's indices without importing scikit-learn.

scikit-learn, with the SciPy it loads, takes about 1.3 s of CPU to import (2-core machine), a
fifth of a small run's start, and every run splits its data. This is scikit-learn's
``train_test_split(np.arange(n), test_size=fraction, stratify=labels, random_state=seed)`` step
for step (``StratifiedShuffleSplit`` and its ``_approximate_mode``), so every split, and every
measured number that rests on one, stays as it was: tests/test_data.py checks that the two agree.
"""

from __future__ import annotations

import math

import numpy as np


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (keep, held_out) of ``labels``, ``ceil(fraction * n)`` of them held out, each
    class in proportion. Raises ValueError, as scikit-learn does, when a part would be empty or
    smaller than the number of classes."""
    n = len(labels)
    n_held = math.ceil(fraction * n)
    n_keep = n - n_held
    _, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if n_keep <= 0:
        raise ValueError(f"with {n} samples and test_size={fraction}, the train set is empty")
    for part, size in (("train_size", n_keep), ("test_size", n_held)):
        if size < len(counts):
            raise ValueError(
                f"The {part} = {size} should be greater or equal to the number of classes = "
                f"{len(counts)}"
            )
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    kept_per_class = _approximate_mode(counts, n_keep, rng)
    held_per_class = _approximate_mode(counts - kept_per_class, n_held, rng)
    keep, held = [], []
    for positions, kept, held_out in zip(members, kept_per_class, held_per_class):
        shuffled = positions.take(rng.permutation(len(positions)), mode="clip")
        keep.extend(shuffled[:kept])
        held.extend(shuffled[kept : kept + held_out])
    return rng.permutation(keep), rng.permutation(held)


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """How many of ``n_draws`` each class gets: its floored share, then one more each for the
    largest remainders, ties broken at random (scikit-learn's ``utils.extmath._approximate_mode``).
    """
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
