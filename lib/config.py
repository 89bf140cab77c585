"""Every run parameter in one dataclass, loaded from a profile in `configs/` plus overrides.

One object travels from notebook to notebook (and into `params.yaml`), so a run is described by
exactly one place. Unknown keys and wrong types are refused up front: a typo in a 3-hour GPU run
should fail in the first second, not be ignored.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


class ConfigError(ValueError):
    """A profile or override that does not describe a valid run."""


@dataclass(frozen=True)
class Config:
    """All parameters of a run; defaults are the demo profile's."""

    # --- what and where -----------------------------------------------------------------
    profile: str = "demo"
    data_root: str = "data/demo"  # holds train/ val/ test/ as the organisers ship them
    runs_root: str = "runs"
    run_name: str = ""  # empty: derived from date, model, lr and batch
    # --- demo generator (demo and smoke profiles only) -----------------------------------
    generate_demo_data: bool = True  # False: data_root must already hold the organisers' files
    demo_seed: int = 0
    demo_train_size: int = 4000
    demo_val_size: int = 800
    demo_test_size: int = 800
    demo_corpus_size: int = 12000  # separate corpus the tiny foundation model is pretrained on
    # --- model --------------------------------------------------------------------------
    model: str = "kit-tiny-vit"
    pretrained: str = "data/demo/foundation/foundation.pt"  # open_clip tag, file or local-dir:
    pretrained_sha256: str = ""  # when set, a checkpoint whose sha256 differs is refused
    image_size: int = 0  # 0: the model's own input size
    trim_text_padding: bool = True  # text tower on a batch's used length, not all 77 (lib/text_trim.py)
    # --- foundation pretraining (demo stand-in for LAION weights) ------------------------
    foundation_epochs: int = 2
    foundation_lr: float = 1e-3
    foundation_batch_size: int = 128
    foundation_warmup_steps: int = 50
    # --- fine-tuning --------------------------------------------------------------------
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int = 50
    schedule_epochs: int = 8  # cosine horizon
    stop_epoch: int = 5  # where training stops (may be before the horizon, as in the reference)
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU; or fp32 / bf16 / fp16
    grad_checkpointing: bool = False
    lock_image: bool = False
    # Photometric jitter of training images, open_clip's AugmentationCfg (brightness, contrast,
    # saturation, hue) applied with this probability; 0 is the reference recipe (no jitter). A hue
    # above 0 changes the colour a car caption names.
    color_jitter: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.3, 0.0])
    color_jitter_prob: float = 0.0
    seed: int = 0
    workers: int = 2
    log_every: int = 20  # steps between out.log lines
    eval_every: int = 1  # epochs between validations
    resume: str = ""  # "" | "latest" | path to a checkpoint
    save_every_steps: int = 0  # > 0: also write checkpoints/latest.pt every N steps (mid-epoch resume)
    keep_checkpoints: int = 0  # > 0: keep only the N newest epoch_N.pt (and the best so far); 0: all
    max_bad_image_fraction: float = 0.0  # images that may be missing or corrupt before we stop
    # --- prompts and retrieval ----------------------------------------------------------
    augment: bool = True  # zero-shot completion of car captions before training
    augment_fields: list[str] = field(default_factory=lambda: ["colour", "type"])
    prompt_policy: str = "strip_prefix"  # none | strip_prefix | surveillance
    car_types: list[str] = field(
        default_factory=lambda: ["Bus", "Microbus", "Minivan", "SUV", "Sedan", "Truck"]
    )
    category_aware: bool = False
    topk: int = 10
    eval_batch_size: int = 256
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def path(self, name: str) -> Path:
        """A path parameter resolved against the repository root (notebooks run elsewhere)."""
        value = Path(getattr(self, name))
        return value if value.is_absolute() else REPO_ROOT / value

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> "Config":
        _check_keys(overrides, source="overrides")
        return _build({**self.to_dict(), **overrides}, source="overrides")


CHOICES: dict[str, tuple[str, ...]] = {
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "prompt_policy": ("none", "strip_prefix", "surveillance"),
}
AUGMENT_FIELDS = ("colour", "brand", "type")


def valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def load(profile: str = "demo", **overrides: Any) -> Config:
    """Read `configs/<profile>.yaml` (or a YAML path), apply overrides, validate.

    Overrides are keyword arguments or `key=value` strings (the CLI form, values parsed as YAML).
    """
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no profile {profile!r}: expected {path} (profiles: {', '.join(known)})")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter: value")
    _check_keys(values, source=str(path))
    values.setdefault("profile", path.stem)
    _check_keys(overrides, source="overrides")
    return _build({**values, **overrides}, source=f"{path} + overrides")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["lr=1e-5", "augment=false"]` -> `{"lr": 1e-05, "augment": False}`."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    _check_keys(parsed, source="command line")
    return parsed


def save(cfg: Config, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write params.yaml: every parameter, plus provenance (git SHA, versions) under `_run`."""
    data = cfg.to_dict()
    if extra:
        data["_run"] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def load_saved(path: Path) -> Config:
    """Read a params.yaml written by `save` (provenance ignored)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    data.pop("_run", None)
    _check_keys(data, source=str(path))
    return _build(data, source=str(path))


def _check_keys(values: dict[str, Any], source: str) -> None:
    unknown = sorted(set(values) - set(valid_keys()))
    if unknown:
        raise ConfigError(
            f"{source}: unknown parameter(s) {', '.join(unknown)}; valid keys: {', '.join(valid_keys())}"
        )


def _build(values: dict[str, Any], source: str) -> Config:
    hints = typing.get_type_hints(Config)
    clean = {name: _coerce(name, value, hints[name], source) for name, value in values.items()}
    for name, allowed in CHOICES.items():
        if name in clean and clean[name] not in allowed:
            raise ConfigError(f"{source}: {name}={clean[name]!r} is not one of {', '.join(allowed)}")
    bad_fields = set(clean.get("augment_fields", [])) - set(AUGMENT_FIELDS)
    if bad_fields:
        raise ConfigError(f"{source}: augment_fields may hold {', '.join(AUGMENT_FIELDS)}, not {sorted(bad_fields)}")
    cfg = Config(**clean)
    if cfg.stop_epoch > cfg.schedule_epochs:
        raise ConfigError(f"{source}: stop_epoch={cfg.stop_epoch} is past schedule_epochs={cfg.schedule_epochs}")
    if not 0.0 <= cfg.max_bad_image_fraction <= 1.0:
        raise ConfigError(f"{source}: max_bad_image_fraction must be within 0..1")
    if not 0.0 <= cfg.color_jitter_prob <= 1.0:
        raise ConfigError(f"{source}: color_jitter_prob must be within 0..1, got {cfg.color_jitter_prob}")
    jitter = cfg.color_jitter
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise ConfigError(f"{source}: color_jitter must be [brightness, contrast, saturation, hue], each >= 0 "
                          f"and hue <= 0.5 (torchvision's ColorJitter), got {jitter}")
    return cfg


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Accept a value of the declared type (an int where a float is declared); refuse the rest."""
    origin = typing.get_origin(hint)
    if origin in (list, types.GenericAlias) or hint is list:
        (item_type,) = typing.get_args(hint) or (str,)
        if item_type is float and isinstance(value, (list, tuple)):  # YAML reads 0 as an int
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, item_type) for v in value):
            raise ConfigError(f"{source}: {name} must be a list of {item_type.__name__}, got {value!r}")
        return list(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "4e-7" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{source}: {name} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value
