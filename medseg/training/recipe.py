"""Training recipes: plain TOML files (``pipelines/*.toml``) loaded into typed, frozen dataclasses.

A recipe is validated once, on load: an unknown section, key or choice fails with a
:class:`~medseg.errors.ConfigError` that names the closest valid spelling and lists them all;
a wrong type or range names the key. Paths (``dataset.path``, ``plan.file``,
``runtime.cache_dir``) are relative to the recipe file; ``~`` expands to the home folder.
docs/training-data.md lists every key with its default.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, did_you_mean


def _choice(*values: Any, **extra: Any) -> dict[str, Any]:
    return {"choices": values, **extra}


@dataclass(frozen=True)
class DatasetConfig:
    """``[dataset]``: where the data is and how it is split into training and validation."""

    path: Path
    split: str = field(default="fixed-80-20", metadata=_choice("fixed-80-20", "kfold"))
    fold: int = field(default=0, metadata={"min": 0})
    folds: int = field(default=5, metadata={"min": 2})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fold >= self.folds:
            raise ConfigError(f"[dataset] fold = {self.fold} must be below folds = {self.folds}")


@dataclass(frozen=True)
class PlanOverrides:
    """``[plan]``: optional overrides of planned values, or ``file`` = a (hand-edited) plan.json."""

    file: Path | None = None
    target_spacing: tuple[float, ...] | None = field(default=None, metadata={"length": 3, "positive": True})
    patch_size: tuple[int, ...] | None = field(default=None, metadata={"positive": True})
    batch_size: int | None = field(default=None, metadata={"min": 1})
    base_features: int | None = field(default=None, metadata={"min": 1})
    memory_gb: float = field(default=8.0, metadata={"positive": True})

    @property
    def any(self) -> bool:
        """True when some planned value is overridden."""
        return any(v is not None for v in (self.target_spacing, self.patch_size, self.batch_size, self.base_features))


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: which network family, in 2D or 3D."""

    family: str = field(default="unet", metadata=_choice("unet", "resenc_unet", "deeplabv3plus", "segnet", "maskrcnn"))
    spatial_dims: int = field(default=3, metadata=_choice(3, 2))
    deep_supervision: bool = True


@dataclass(frozen=True)
class LossConfig:
    """``[loss]``: the training loss; ``class_weights`` one per class (background first) or empty."""

    name: str = field(default="dice_ce", metadata=_choice("dice_ce", "dice", "ce", "focal", "dice_focal"))
    class_weights: tuple[float, ...] = field(default=(), metadata={"positive": True})


@dataclass(frozen=True)
class OptimizerConfig:
    """``[optimizer]``: optimiser, learning rate schedule and gradient clipping (0 = off)."""

    name: str = field(default="sgd", metadata=_choice("sgd", "adam", "adamw", "rmsprop"))
    lr: float = field(default=0.01, metadata={"positive": True})
    momentum: float = field(default=0.99, metadata={"min": 0.0, "max": 1.0})
    nesterov: bool = True
    weight_decay: float = field(default=3e-5, metadata={"min": 0.0})
    grad_clip: float = field(default=12.0, metadata={"min": 0.0})
    schedule: str = field(default="poly", metadata=_choice("poly", "cosine", "constant"))


@dataclass(frozen=True)
class AugmentationConfig:
    """``[augmentation]``: which augmentations run (probabilities follow nnU-Net; see augment.py).

    ``rotation_degrees`` is the largest rotation per axis; unset means 30 in 3D and 180 in 2D.
    ``scaling`` is the zoom range (``[1, 1]`` disables it). ``foreground_fraction`` is the share
    of patches forced to contain foreground.
    """

    rotation: bool = True
    rotation_degrees: float | None = field(default=None, metadata={"min": 0.0, "max": 180.0})
    scaling: tuple[float, ...] = field(default=(0.7, 1.4), metadata={"length": 2, "positive": True})
    flips: bool = True
    elastic: bool = False
    noise: bool = True
    blur: bool = True
    gamma: bool = True
    brightness_contrast: bool = True
    low_resolution: bool = True
    foreground_fraction: float = field(default=0.33, metadata={"min": 0.0, "max": 1.0})

    def __post_init__(self) -> None:
        if self.scaling[0] > self.scaling[1]:
            raise ConfigError(f"[augmentation] scaling needs [low, high] with low <= high, got {list(self.scaling)}")


@dataclass(frozen=True)
class InstanceConfig:
    """``[instances]``: instance models (datasets of instance maps only; docs/instances.md).

    U-Net families: interior/boundary targets with boundaries ``boundary_width`` voxels thick, and
    the seeded watershed's ``foreground_threshold`` / ``seed_threshold`` / ``min_seed``.
    ``maskrcnn``: the ResNet ``backbone``, ``fpn_channels``, and the detection ``score_threshold``.
    """

    boundary_width: int = field(default=1, metadata={"min": 1})
    foreground_threshold: float = field(default=0.5, metadata={"min": 0.01, "max": 0.99})
    seed_threshold: float = field(default=0.5, metadata={"min": 0.01, "max": 0.99})
    min_seed: int = field(default=3, metadata={"min": 1})
    backbone: str = field(default="resnet18", metadata=_choice("resnet18", "resnet34", "resnet50"))
    fpn_channels: int = field(default=128, metadata={"min": 8})
    score_threshold: float = field(default=0.5, metadata={"min": 0.01, "max": 0.99})


@dataclass(frozen=True)
class BudgetConfig:
    """``[budget]``: training stops at whichever comes first."""

    epochs: int = field(default=1000, metadata={"min": 1})
    iterations_per_epoch: int = field(default=250, metadata={"min": 1})
    minutes: float | None = field(default=None, metadata={"positive": True})


@dataclass(frozen=True)
class ValidationConfig:
    """``[validation]``: validate every N epochs (and after the last)."""

    every: int = field(default=10, metadata={"min": 1})


@dataclass(frozen=True)
class RuntimeConfig:
    """``[runtime]``: device, numeric precision, data workers, seed and the preprocessed-case cache."""

    device: str = field(default="auto", metadata=_choice("auto", "cpu", "cuda"))
    precision: str = field(default="auto", metadata=_choice("auto", "fp32", "bf16", "fp16"))
    workers: int = field(default=2, metadata={"min": 0})
    seed: int = 0
    cache_dir: Path = Path("~/.cache/medseg")


SECTIONS: dict[str, type] = {
    "dataset": DatasetConfig,
    "plan": PlanOverrides,
    "model": ModelConfig,
    "loss": LossConfig,
    "optimizer": OptimizerConfig,
    "augmentation": AugmentationConfig,
    "instances": InstanceConfig,
    "budget": BudgetConfig,
    "validation": ValidationConfig,
    "runtime": RuntimeConfig,
}


@dataclass(frozen=True)
class Recipe:
    """A whole training recipe; ``source`` is the TOML file it came from (None when built in code)."""

    name: str
    dataset: DatasetConfig
    plan: PlanOverrides = PlanOverrides()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    instances: InstanceConfig = InstanceConfig()
    budget: BudgetConfig = BudgetConfig()
    validation: ValidationConfig = ValidationConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    source: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """A TOML/JSON-ready dict (paths as absolute strings, tuples as lists, no ``source``)."""
        out: dict[str, Any] = {"name": self.name}
        for section in SECTIONS:
            values = asdict(getattr(self, section))
            out[section] = {k: _plain(v) for k, v in values.items() if v is not None}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> Recipe:
        """Validate a parsed recipe (as from TOML); relative paths resolve against ``base_dir``."""
        return parse_recipe(data, base_dir or Path.cwd())


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a TOML recipe; relative paths in it resolve against its folder."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"recipe {path} does not exist; see pipelines/ for examples")
    toml = _toml_module()
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        recipe = parse_recipe(data, path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return _with_source(recipe, path.resolve())


def parse_recipe(data: Mapping[str, Any], base_dir: Path) -> Recipe:
    """Build a Recipe from a parsed mapping; every key, type, range and choice is checked."""
    allowed = ["name", *SECTIONS]
    for key in data:
        if key not in allowed:
            raise ConfigError(_unknown("section", key, allowed))
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError('the recipe needs a top-level name = "..."')
    if "dataset" not in data:
        raise ConfigError('the recipe needs a [dataset] section with path = "..."')
    sections = {}
    for section, cls in SECTIONS.items():
        values = data.get(section, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section}] must be a table of key = value pairs")
        sections[section] = _build(cls, section, values, base_dir)
    return Recipe(name=name, **sections)


# ---------------------------------------------------------------------------- internals
def _toml_module() -> Any:
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:  # Python 3.10
        pass
    try:
        import tomli
    except ModuleNotFoundError:
        raise ConfigError("reading TOML recipes on Python 3.10 needs 'pip install tomli'") from None
    return tomli


def _with_source(recipe: Recipe, source: Path) -> Recipe:
    from dataclasses import replace

    return replace(recipe, source=source)


def _unknown(what: str, value: Any, valid: list[Any]) -> str:
    """'unknown X 'v'; did you mean 'w'? valid: a, b, c' (difflib's closest match)."""
    names = [str(v) for v in valid]
    return f"unknown {what} {value!r}; {did_you_mean(value, names, cutoff=0.0)}valid: {', '.join(names)}"


def _build(cls: type, section: str, values: Mapping[str, Any], base_dir: Path) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"[{section}] " + _unknown("key", key, list(known)))
    kwargs = {}
    for name, spec in known.items():
        if name in values:
            kwargs[name] = _convert(values[name], hints[name], spec.metadata, f"[{section}] {name}", base_dir)
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise ConfigError(f"[{section}] needs {name} = ...")
        elif hints[name] is Path and spec.default is not MISSING:
            kwargs[name] = _path(spec.default, base_dir)
    return cls(**kwargs)


def _convert(value: Any, hint: Any, meta: Mapping[str, Any], where: str, base_dir: Path) -> Any:
    optional = type(None) in typing.get_args(hint)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return _tuple(value, typing.get_args(hint)[0], meta, where)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path string, got {value!r}")
        return _path(value, base_dir)
    result = _scalar(value, hint, where)
    if "choices" in meta and result not in meta["choices"]:
        raise ConfigError(f"{where}: " + _unknown("value", result, list(meta["choices"])))
    _check_range(result, meta, where)
    return result


def _scalar(value: Any, hint: Any, where: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported recipe field type {hint!r}")  # a bug in this module, not user input


def _tuple(value: Any, item: Any, meta: Mapping[str, Any], where: str) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list like [1, 2, 3], got {value!r}")
    items = tuple(_scalar(v, item, where) for v in value)
    if "length" in meta and len(items) != meta["length"]:
        raise ConfigError(f"{where} needs {meta['length']} values, got {len(items)}")
    for v in items:
        _check_range(v, meta, where)
    return items


def _check_range(value: Any, meta: Mapping[str, Any], where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if meta.get("positive") and value <= 0:
        raise ConfigError(f"{where} must be positive, got {value}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{where} must be at least {meta['min']}, got {value}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{where} must be at most {meta['max']}, got {value}")


def _path(value: str | Path, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
