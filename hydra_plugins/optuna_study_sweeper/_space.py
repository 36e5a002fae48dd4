"""The search space of an Optuna search, from Hydra's override syntax (as in hydra-optuna-sweeper):
``choice(2, 4)``, ``range(1, 9, 2)``, ``interval(0.0, 0.3)``, ``tag(log, interval(1e-4, 1e-2))``,
``tag(int, ...)``. (A leading underscore: Hydra's plugin scan skips it; it imports optuna.)
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def search_space(overrides: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """Hydra overrides -> Optuna distributions (the sweeps) and fixed values (the rest)."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        name = override.get_key_element()
        if override.is_sweep_override():
            space[name] = _distribution(override)
        else:
            fixed[name] = override.get_value_element_as_str()
    return space, fixed


def _distribution(override: Override) -> BaseDistribution:
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, RangeSweep):
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        # Hydra's range excludes its stop, Optuna's includes its high.
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int)):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(
        f"{override.input_line}: the Optuna sweeper takes choice, range or interval sweeps."
    )
