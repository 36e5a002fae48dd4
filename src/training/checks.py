"""Settings checked before any data is read: each mistake gets one sentence naming it and a fix."""

from __future__ import annotations

import difflib
import inspect
from numbers import Real
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.data import worker_count
from src.data.core import check_fraction
from src.errors import ConfigError
from src.model.vit import VisionTransformer, check_global_pool, check_shape
from src.runs.resume import RESOLVER_CALL, dotted_keys
from src.training.device import resolve_device, resolve_precision
from src.training.optim import MAX_WARMUP_SHARE, check_learning_rate, warmup_epochs_used
from src.training.ranges import LIMITS, check_range
from src.training.resize import check_resizing

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MIN_HIDDEN = 3  # characters: shorter values (true, 1) would be replaced inside other words
# model.* keys that are not VisionTransformer's arguments: the option's name and its start weights.
MODEL_EXTRAS = ("name", "pretrained")


def check_config(cfg: DictConfig) -> None:
    """Raises the one sentence for the first bad setting; a value that a resolver gave (the
    environment's, say) is named by its interpolation, never shown."""
    try:
        _check_settings(cfg)
    except ConfigError as err:
        raise ConfigError(without_resolved_values(str(err), cfg)) from None


def without_resolved_values(sentence: str, cfg: DictConfig) -> str:
    """``sentence`` with every value that an interpolation calling a resolver gave (such as
    ``${oc.env:TOKEN}``) replaced by that interpolation: the sentence names the setting and
    where its value came from, not the value, which may be a secret."""
    for key, raw in dotted_keys(OmegaConf.to_container(cfg, resolve=False)).items():
        if not (isinstance(raw, str) and RESOLVER_CALL.search(raw)):
            continue
        try:
            value = str(OmegaConf.select(cfg, key, throw_on_missing=True))
        except Exception:  # it did not resolve, so it echoed nothing
            continue
        if len(value) >= MIN_HIDDEN:
            sentence = sentence.replace(f"'{value}'", raw).replace(value, raw)
    return sentence


def _check_settings(cfg: DictConfig) -> None:
    for group in ("model", "dataset"):
        _check_not_a_base_file(cfg, group)
    _check_not_a_base_preset()
    _check_model_keys(cfg.model)
    base = _raw(CONFIGS / "config.yaml")
    base.pop("defaults"), base.pop("hydra")
    options = _options(cfg)
    _check_known_keys(cfg, base, options)
    _check_kinds(cfg, base, options)
    for key in sorted(set(LIMITS) | set(_defaults(base, options))):  # every number, and nan/inf
        check_range(key, OmegaConf.select(cfg, key, default=None))
    _check_trainer(cfg.trainer)
    resolve_precision(cfg.trainer.precision, resolve_device(cfg.trainer.device))
    model = cfg.model
    check_shape(model.image_size, model.patch_size, model.embed_dim, model.num_heads)
    for key in ("drop_rate", "attn_drop_rate", "drop_path_rate", "patch_drop_rate"):
        _fraction(f"model.{key}", model[key])
    check_global_pool(model.global_pool)
    _check_augment(cfg.augment, cfg.trainer.batch_size)
    check_resizing(cfg)
    _fraction("dataset.augment.crop_fraction", cfg.dataset.augment.crop_fraction)
    for part in ("val", "test"):  # here, not after a download that the split would come after
        if cfg.dataset.get(f"{part}_fraction") is not None:
            check_fraction(cfg.dataset[f"{part}_fraction"], f"dataset.{part}_fraction")
    check_learning_rate(cfg.optimizer.get("lr"))
    finetune = cfg.finetune
    if not isinstance(finetune.layer_decay, Real) or not 0.0 < finetune.layer_decay <= 1.0:
        raise ConfigError(
            f"finetune.layer_decay={finetune.layer_decay} must be in (0, 1], e.g. 0.75 "
            "(1 turns it off)."
        )
    if not isinstance(finetune.backbone_lr_scale, Real) or finetune.backbone_lr_scale <= 0:
        raise ConfigError(
            f"finetune.backbone_lr_scale={finetune.backbone_lr_scale} must be above 0, e.g. 0.1 "
            "(to stop the backbone learning, use finetune.freeze_backbone=true)."
        )
    _check_schedule(cfg.scheduler)


def warmup_note(cfg: DictConfig) -> str | None:
    """The warning for a warmup longer than half the run (scheduler.warmup_epochs=5 with
    trainer.epochs=3), which the schedules shorten to half (optim.MAX_WARMUP_SHARE): what it
    would have done, what it does, and what to set; None when warmup fits."""
    asked, epochs = cfg.scheduler.get("warmup_epochs", 0), cfg.trainer.epochs
    used = warmup_epochs_used(asked, epochs)
    if used >= asked or not str(cfg.scheduler.get("_target_", "")).startswith("src.training."):
        return None
    below = "until its last step" if asked >= epochs else "for most of it"
    return (
        f"scheduler.warmup_epochs={asked} would take most of this {epochs}-epoch run "
        f"(trainer.epochs={epochs}), keeping the learning rate below optimizer.lr="
        f"{cfg.optimizer.lr} {below}; it warms up over the first {used:g} epochs instead "
        f"({MAX_WARMUP_SHARE:.0%} of the run): to choose, set scheduler.warmup_epochs="
        f"{epochs / 10:g} (a tenth of the run) or 0 (none), or train longer"
    )


def _check_schedule(scheduler: DictConfig) -> None:
    if "gamma" in scheduler and not 0 < scheduler.gamma <= 1:
        raise ConfigError(f"scheduler.gamma={scheduler.gamma} must be in (0, 1], e.g. 0.1.")


def _check_not_a_base_file(cfg: DictConfig, group: str) -> None:
    """configs/model/_common.yaml and configs/dataset/_torchvision.yaml hold what the options
    share; Hydra offers them among the options, but alone they name no model or dataset."""
    if "name" in cfg[group]:
        return
    choice = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    options = config_options(group)
    chosen = f"{group}={choice}" if choice else f"the {group} chosen"
    raise ConfigError(
        f"{chosen} is a base file that the {group} options share, not a {group} by itself; "
        f"choose one of {', '.join(options)}."
    )


def _check_not_a_base_preset() -> None:
    """configs/experiment/_gpu_recipe.yaml holds what the GPU presets share; Hydra composes it
    when asked (+experiment=_gpu_recipe), but alone it is no recipe."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    choice = choices.get("experiment")
    if choice and Path(choice).name.startswith("_"):
        presets = config_options("experiment")
        raise ConfigError(
            f"+experiment={choice} is a base file that the presets build on, not a preset by "
            f"itself; choose one of {', '.join(presets)}."
        )


def _check_model_keys(model: DictConfig) -> None:
    known = set(inspect.signature(VisionTransformer).parameters) | set(MODEL_EXTRAS)
    unknown = sorted(set(model) - known)
    if unknown:
        raise ConfigError(
            f"model.{unknown[0]} is not a model setting (check its spelling, or drop it); the "
            f"model settings are {', '.join(sorted(known))}."
        )


def _check_known_keys(cfg: DictConfig, base: dict, options: dict[str, tuple[str, dict]]) -> None:
    """A key that nothing reads, such as +trainer.epoch=3 (Hydra's hint for a misspelled key is
    to add it with +), is refused by name instead of being ignored, or raising deep in the
    optimizer."""
    groups = {"model", "dataset", "optimizer", "scheduler", "logger"}
    _refuse_unknown("", set(cfg) - {"hydra"}, set(base) | groups, "the top-level settings")
    for block in ("trainer", "augment", "finetune"):
        _refuse_unknown(f"{block}.", set(cfg[block]), set(base[block]), f"the {block} settings")
    for group in ("optimizer", "scheduler"):
        known = _arguments(cfg[group].get("_target_"))
        if known is not None:
            _refuse_unknown(
                f"{group}.",
                set(cfg[group]),
                known | {"_target_", "_partial_"},
                f"the arguments of {group}'s {cfg[group]._target_}",
            )
    if "dataset" in options:
        option, settings = options["dataset"]
        _refuse_unknown(
            "dataset.", set(cfg.dataset), set(settings), f"the settings of dataset={option}"
        )


def _check_kinds(cfg: DictConfig, base: dict, options: dict[str, tuple[str, dict]]) -> None:
    """Each setting keeps the kind of its default: true or false, a number, or a list of numbers
    (Hydra takes trainer.compile=yes as the text 'yes', which Python would take as true)."""
    defaults = _defaults(base, options)
    for key, default in defaults.items():
        if isinstance(default, str) and default.startswith("${"):  # the default of what it names
            default = defaults.get(default.strip("${}"), default)
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{key}={value} must be true or false.")
        if _number(default) and not _number(value):
            raise ConfigError(f"{key}={value} must be a number, like its default {default}.")
        if (
            isinstance(default, list)
            and default
            and all(map(_number, default))
            and not (
                isinstance(value, ListConfig)
                and len(value) == len(default)
                and all(map(_number, value))
            )
        ):
            raise ConfigError(
                f"{key}={value} must be a list of {len(default)} numbers, like its default "
                f"[{', '.join(map(str, default))}] (quoted on the command line: '{key}=[...]')."
            )


def _defaults(base: dict, options: dict[str, tuple[str, dict]]) -> dict[str, Any]:
    """Every setting's default, by dotted key: config.yaml's and the chosen options' files'."""
    defaults = dotted_keys(base)
    for group, (_, settings) in options.items():
        defaults.update(dotted_keys(settings, prefix=f"{group}."))
    return defaults


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _refuse_unknown(prefix: str, keys: set[str], known: set[str], what: str) -> None:
    unknown = sorted(keys - known)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], known, n=1)
    hint = f"did you mean {prefix}{close[0]}?" if close else "check its spelling, or drop it"
    raise ConfigError(
        f"{prefix}{unknown[0]} is not among {what} ({hint}); they are "
        f"{', '.join(sorted(k for k in known if not k.startswith('_')))}."
    )


def _arguments(target: str | None) -> set[str] | None:
    """The keyword arguments ``target`` takes, past the one train.py passes itself (the
    parameters, the optimizer, the steps); None when it takes any (**kwargs) or is not found."""
    try:
        parameters = inspect.signature(get_method(target)).parameters.values() if target else ()
    except Exception:  # instantiate says what is wrong with the target itself
        return None
    if not parameters or any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    given = {"params", "optimizer", "steps_per_epoch", "epochs"}
    return {p.name for p in parameters} - given


def _options(cfg: DictConfig) -> dict[str, tuple[str, dict]]:
    """Each group's chosen option and its file's settings (unresolved), where it is known."""
    options = {}
    for group in ("model", "dataset", "optimizer", "scheduler"):
        option = _chosen(group, cfg[group])
        if option is not None:
            options[group] = (option, option_settings(group, option))
    return options


def _chosen(group: str, block: DictConfig) -> str | None:
    """The group's option: Hydra's choice when the block is that option's (a resume composes the
    run's own config under the choices of the command ``resume=RUN``), else the option whose name
    or _target_ the block has."""
    key = "_target_" if "_target_" in block else "name"
    choice = HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None
    if not _is_file(group, choice) or option_settings(group, choice).get(key) != block.get(key):
        named = [
            o for o in config_options(group) if option_settings(group, o).get(key) == block.get(key)
        ]
        choice = named[0] if named else None
    return choice if _is_file(group, choice) else None


def _is_file(group: str, choice: str | None) -> bool:
    return bool(choice) and (CONFIGS / group / f"{choice}.yaml").is_file()


def config_options(group: str, bases: bool = False) -> list[str]:
    """The options of a config group (configs/GROUP/*.yaml), without the base files (named _*)
    unless ``bases``."""
    paths = (CONFIGS / group).glob("*.yaml" if bases else "[!_]*.yaml")
    return sorted(p.stem for p in paths)


def option_settings(group: str, option: str) -> dict:
    """configs/<group>/<option>.yaml merged over the files its defaults list names, unresolved."""
    config = OmegaConf.load(CONFIGS / group / f"{option}.yaml")
    bases = [
        OmegaConf.create(option_settings(group, base))
        for base in config.get("defaults", [])
        if isinstance(base, str) and base != "_self_"
    ]
    merged = _raw(OmegaConf.merge(*bases, config))
    merged.pop("defaults", None)
    return merged


def _raw(config: Path | DictConfig) -> dict:
    return OmegaConf.to_container(
        OmegaConf.load(config) if isinstance(config, Path) else config, resolve=False
    )


def _check_trainer(trainer: DictConfig) -> None:
    _fraction("trainer.label_smoothing", trainer.label_smoothing)
    _whole_number("trainer.test_time_shift", trainer.test_time_shift, minimum=0)
    worker_count(trainer.num_workers)
    if not isinstance(trainer.ema, bool):
        raise ConfigError(f"trainer.ema={trainer.ema} must be true or false.")
    if not isinstance(trainer.ema_decay, Real) or not 0.0 < trainer.ema_decay < 1.0:
        raise ConfigError(
            f"trainer.ema_decay={trainer.ema_decay} must be in (0, 1), e.g. 0.999 (closer to 1 "
            "averages over more steps)."
        )
    if trainer.compile_mode not in COMPILE_MODES:
        raise ConfigError(
            f"trainer.compile_mode={trainer.compile_mode!r} is not known; use one of "
            f"{', '.join(COMPILE_MODES)}."
        )


def _check_augment(augment: DictConfig, batch_size: int) -> None:
    if augment.crop_padding != "auto":
        _whole_number("augment.crop_padding", augment.crop_padding, minimum=0)
    _fraction("augment.random_erasing", augment.random_erasing)
    if not isinstance(augment.mix_prob, Real) or not 0.0 <= augment.mix_prob <= 1.0:
        raise ConfigError(f"augment.mix_prob={augment.mix_prob} must be in [0, 1], e.g. 1.0.")
    if batch_size % augment.repeats:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is not divisible by "
            f"augment.repeats={augment.repeats}; "
            "each batch holds batch_size / repeats images, so choose a batch size that divides."
        )


def _whole_number(setting: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{setting}={value} must be a whole number of at least {minimum}.")


def _fraction(setting: str, value) -> None:
    if not isinstance(value, Real) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{setting}={value} must be in [0, 1), e.g. 0.1.")
