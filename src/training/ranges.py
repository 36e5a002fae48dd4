"""The range of every number a run is given: checked before the run starts, by train.py's checks
(src/training/checks.py) and, before anything is composed, by the web page's allowlist.

A number out of these bounds is a typo or an attack, not an experiment: a seed past 2**32 - 1
fails inside NumPy after the run folder is made, and 10**5000 epochs never end.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from numbers import Real

from src.data.randaugment import MAX_MAGNITUDE
from src.errors import ConfigError

SEED_MAX = 2**32 - 1  # NumPy's and Python's random generators take seeds up to this
SIZE_MAX = 8192  # pixels of an image side or channels of a token
BATCH_MAX = 2**20
EPOCHS_MAX = 100_000


@dataclass(frozen=True)
class Limit:
    low: float
    high: float
    whole: bool = True  # a whole number
    hint: str = ""  # what the sentence adds, e.g. what 0 means


# Keys absent from a config (another optimizer's momentum, a dataset without max_memory_mb) are
# not checked.
LIMITS: dict[str, Limit] = {
    "seed": Limit(0, SEED_MAX),
    "dataset.split_seed": Limit(0, SEED_MAX),
    "trainer.epochs": Limit(1, EPOCHS_MAX),
    "trainer.batch_size": Limit(1, BATCH_MAX),
    "trainer.eval_batch_size": Limit(1, BATCH_MAX),
    "trainer.accumulate_steps": Limit(1, 4096),
    "trainer.val_every": Limit(1, EPOCHS_MAX),
    "trainer.start_image_size": Limit(1, SIZE_MAX),  # or null
    "trainer.full_size_at": Limit(0.01, 1, False, "the share of the epochs, e.g. 0.75"),
    "trainer.num_workers": Limit(0, 1024),  # or auto
    "trainer.test_time_shift": Limit(0, 8, hint="pixels; 0 tests one view"),
    "trainer.grad_clip": Limit(0, 1e6, False, "0 turns clipping off"),
    "augment.randaugment_ops": Limit(0, 32),
    "augment.randaugment_magnitude": Limit(0, MAX_MAGNITUDE, False, "e.g. 9"),
    "augment.repeats": Limit(1, 64),
    "augment.crop_padding": Limit(0, SIZE_MAX),  # or auto
    "augment.mixup_alpha": Limit(0, 100, False, "0 turns it off"),
    "augment.cutmix_alpha": Limit(0, 100, False, "0 turns it off"),
    "model.image_size": Limit(1, SIZE_MAX),
    "model.patch_size": Limit(1, SIZE_MAX),
    "model.embed_dim": Limit(1, 65536),
    "model.depth": Limit(1, 1000),
    "model.num_heads": Limit(1, 4096),
    "model.mlp_ratio": Limit(1e-3, 64, False, "e.g. 4"),
    "dataset.image_size": Limit(1, SIZE_MAX),
    "dataset.model_input.image_size": Limit(1, SIZE_MAX),
    "dataset.model_input.patch_size": Limit(1, SIZE_MAX),
    "dataset.max_memory_mb": Limit(0, 2**30),
    "dataset.channels": Limit(1, 64),  # or auto
    "dataset.num_workers": Limit(0, 1024),  # or auto
    "optimizer.weight_decay": Limit(0, 10, False, "e.g. 0.05"),
    "optimizer.momentum": Limit(0, 1, False, "e.g. 0.9"),
    "scheduler.warmup_epochs": Limit(0, EPOCHS_MAX, False, "0 for none"),
    "scheduler.step_epochs": Limit(1, EPOCHS_MAX),
    "scheduler.min_lr": Limit(0, 1, False, "below optimizer.lr"),
}
# A number typed with more digits than this is out of every range above; Python refuses to read
# one of over 4,300 digits at all, so such a value gets the sentence before anything reads it.
MAX_DIGITS = 20
LONG_NUMBER = re.compile(rf"[+-]?\d{{{MAX_DIGITS + 1},}}")
TOKENS = re.compile(r"[\s,\[\](){}:]+")  # what separates the numbers of a list or a sweep


def shown(value: object, limit: int = 80) -> str:
    """A value as a sentence quotes it: at most ``limit`` characters, its length said past that."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def check_range(key: str, value: object) -> None:
    """Raises the sentence for a number outside ``key``'s range, or not finite (nan, inf)."""
    if not isinstance(value, Real) or isinstance(value, bool):
        return  # not a number: the kind checks say so
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value} is not a finite number; give a number, e.g. 0.1.")
    limit = LIMITS.get(key)
    if limit is None:
        return
    if not (limit.low <= value <= limit.high and (isinstance(value, int) or not limit.whole)):
        kind = "a whole number" if limit.whole else "a number"
        hint = f" ({limit.hint})" if limit.hint else ""
        raise ConfigError(
            f"{key}={shown(value)} must be {kind} from {number_text(limit.low)} to "
            f"{number_text(limit.high)}{hint}."
        )


def number_text(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


def refuse_long_numbers(overrides: list[str]) -> None:
    """The sentence for an override holding a number of more than MAX_DIGITS digits, such as
    seed=99999999999999999999999: read before Hydra, which fails on over 4,300 digits."""
    for override in overrides:
        key, _, value = override.partition("=")
        if any(LONG_NUMBER.fullmatch(token) for token in TOKENS.split(value)):
            raise ConfigError(
                f"{shown(override)}: a number of more than {MAX_DIGITS} digits is out of range "
                f"for {key.lstrip('+~') or 'any setting'}; check the value."
            )
