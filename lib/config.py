"""Every run parameter in one dataclass: default (the A3R reference recipe; knobs it lacks take the
demo profile's), valid range, and the profiles (configs/*.yaml, each holding only what differs, may
`extends:` another). Checked once when a profile, command line or params.yaml is read, so a typo
fails in the first second; a run's parameters then live in `<run>/params.yaml` (lib.runs).
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lib.errors import KitError
from lib.paths import REPO_ROOT, resolve

CONFIG_DIR = REPO_ROOT / "configs"
PROVENANCE_KEY = "_run"  # params.yaml: what produced the run (git commit, versions); not a parameter
EXTENDS_KEY = "extends"  # a profile YAML: the profile it starts from
RENAMED = {"augment": "attribute_augmentation", "augment_fields": "attribute_fields",
           "color_jitter": "photometric_jitter", "color_jitter_prob": "photometric_jitter_prob",
           "prompt_policy": "query_policy",
           "resume": "not a parameter: make reproduce RESUME=runs/<name> (or python -m lib.train "
                     "--resume latest)"}
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
MAX_RUN_NAME_BYTES = 200  # file systems allow 255; the kit adds suffixes (".partial.ipynb", "-ablation.md")
RESERVED_RUN_NAMES = ("latest",)


class ConfigError(KitError, ValueError):
    """A profile, override or params.yaml that does not describe a valid run."""


def knob(default: Any, **rules: Any) -> Any:
    """A Config field with its valid range: ge / gt / le / lt bounds, or `choices`."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass(frozen=True)
class Config:
    """All parameters of a run. Defaults: the reference recipe (see the module docstring)."""

    # --- what and where -----------------------------------------------------------------
    profile: str = "competition"  # the profile the run started from (a label)
    data_root: str = "data/dataset"  # holds train/ val/ test/ as the organisers ship them
    runs_root: str = "runs"
    run_name: str = ""  # empty: derived from date, model, lr and batch
    # --- demo generator (used when generate_demo_data) ------------------------------------
    generate_demo_data: bool = False  # True: make the synthetic dataset under data_root first
    demo_seed: int = knob(0, ge=0)
    demo_train_size: int = knob(4000, ge=2)
    demo_val_size: int = knob(2000, ge=2)
    demo_test_size: int = knob(2000, ge=2)  # 1,000 queries a board: a board's mAP@10 to about ±0.011
    demo_corpus_size: int = knob(12000, ge=2)  # the foundation's pretraining corpus, never train/val/test
    # --- model --------------------------------------------------------------------------
    model: str = "ViT-bigG-14"
    pretrained: str = "laion2b_s39b_b160k"  # open_clip tag, a file, or local-dir:<folder>
    pretrained_sha256: str = ""  # when set, weights whose sha256 differs are refused
    image_size: int = knob(0, ge=0)  # 0: the model's own input size
    trim_text_padding: bool = True  # text tower on a batch's used length, not all 77 (lib.model.text_trim)
    # --- the demo's foundation pretraining (stands in for LAION weights) ------------------
    foundation_epochs: int = knob(2, ge=1)
    foundation_lr: float = knob(1e-3, gt=0)
    foundation_batch_size: int = knob(128, ge=2)
    foundation_warmup_steps: int = knob(50, ge=0)
    # --- fine-tuning --------------------------------------------------------------------
    batch_size: int = knob(25, ge=2)  # a contrastive batch of one pair has nothing to contrast
    accum_steps: int = knob(1, ge=1)
    lr: float = knob(4e-7, gt=0)
    weight_decay: float = knob(0.01, ge=0)
    beta1: float = knob(0.9, ge=0, lt=1)
    beta2: float = knob(0.98, ge=0, lt=1)
    eps: float = knob(1e-6, gt=0)
    warmup_steps: int = knob(10000, ge=0)
    schedule_epochs: int = knob(30, ge=1)  # cosine horizon
    stop_epoch: int = knob(5, ge=1)  # where training stops (before the horizon, as in the reference)
    precision: str = knob("auto", choices=("auto", "fp32", "bf16", "fp16"))  # auto: bf16 on GPU, fp32 on CPU
    grad_checkpointing: bool = False
    lock_image: bool = False
    # open_clip's colour jitter of training images [brightness, contrast, saturation, hue], applied with
    # this probability (0: none, the reference); a hue above 0 would change the colour a caption names
    photometric_jitter: list[float] = knob([0.3, 0.4, 0.3, 0.0])
    photometric_jitter_prob: float = knob(0.0, ge=0, le=1)
    seed: int = knob(0, ge=0)
    workers: int = knob(8, ge=0)
    log_every: int = knob(100, ge=1)  # steps between out.log lines
    eval_every: int = knob(1, ge=1)  # epochs between validations
    max_steps: int = knob(0, ge=0)  # > 0: stop after this many optimizer steps (a short trial); 0: stop_epoch
    # > 0: also write checkpoints/latest.pt every N steps (a preempted bigG run, 5,044 steps an epoch,
    # loses at most N); the demo's epochs (62 steps) are shorter than that
    save_every_steps: int = knob(1000, ge=0)
    keep_checkpoints: int = knob(0, ge=0)  # > 0: keep only the N newest epoch_N.pt (and the best); 0: all
    max_bad_image_fraction: float = knob(0.0, ge=0, le=1)  # images that may be missing or corrupt
    # 03_train's check that the kept epoch's val mAP@10 beat epoch 0's: fail stops the run, warn goes on
    no_gain_over_zero_shot: str = knob("fail", choices=("fail", "warn"))
    # the epoch scored and submitted: N (the reference submitted epoch_5.pt of 30,
    # notebook-quick-review.ipynb); 0: the best val mAP@10 epoch (val is then in-sample for later votes)
    submit_epoch: int = knob(5, ge=0)
    # --- weight averaging after training (lib.soup.make; off: docs/results.md, the ablation) ---
    # none: the kept epoch; uniform: every epoch's mean; greedy: epochs by selection score, each kept if
    # the soup scores no lower (Wortsman et al. 2022); wise: WiSE-FT, (1 - alpha) * pretrained + alpha *
    # best epoch. Selection score: val's official mAP@10, averaged with test A's where known (the demo)
    soup: str = knob("none", choices=("none", "uniform", "greedy", "wise"))
    # WiSE-FT's alpha: the grid it is chosen on (by the selection score); one value fixes it
    wise_alphas: list[float] = knob([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], ge=0, le=1)
    # other runs of the same model whose epochs join a uniform or greedy soup (the reference's soup
    # notebook mixed epochs 15 and 10 of one run with epoch 5 of another)
    soup_runs: list[str] = knob([])
    # --- attribute augmentation (step 2) and retrieval -------------------------------------
    attribute_augmentation: bool = True  # zero-shot completion of car captions before training
    # the fields a car caption lacks that are filled: all three, as the reference's shipped file does
    attribute_fields: list[str] = knob(["colour", "brand", "type"], choices=("colour", "brand", "type"))
    augment_padded_images: bool = False  # the reference scores unpadded images (augment.py:130)
    augment_val: bool = True  # the reference completes the val car captions too, and validates on them
    # a car's text. attributes: "colour brand type" (the reference's 4th field, parse_augment.py:18);
    # sentence: the completed caption
    car_caption_form: str = knob("attributes", choices=("attributes", "sentence"))
    # a folder of the reference's augmented label files (*train_label.txt, *val_label.txt: image$
    # attribute$caption$augmented) whose fourth field completes the car captions: no zero-shot pass
    augmented_labels: str = ""
    query_policy: str = knob("strip_prefix", choices=("none", "strip_prefix", "surveillance"))
    category_aware: bool = False
    topk: int = knob(10, ge=1)
    # --- re-ranking of each query's first-stage top-N (lib.eval.rerank; docs/reranking.md) ----
    # none: the reference's submission; a3r: the A3R paper's (reranking.ipynb, three slips corrected);
    # aqe, kreciprocal: baselines
    rerank: str = knob("none", choices=("none", "a3r", "aqe", "kreciprocal"))
    rerank_depth_car: int = knob(25, ge=1)  # N: the reference re-ranks the top 25 of a car query
    rerank_depth_person: int = knob(50, ge=1)  # and the top 50 of a person query
    rerank_m: int = knob(10, ge=1)  # top images that build the adapted (A3R) or expanded (aQE) query
    rerank_k: int = knob(10, ge=1)  # neighbourhood size of the k-reciprocal tests (A3R, Zhong)
    a3r_flip: bool = True  # similarities: max over the image and its mirror (the mirror is cached)
    a3r_adapted_query: bool = True  # false: the text query itself (the notebook's "no adaption")
    # embedded: the form of reranking.ipynb's result-file cell (run on two queries, never submitted)
    a3r_reciprocal: str = knob("embedded", choices=("embedded", "quantified", "none"))
    aqe_alpha: float = knob(3.0, ge=0)  # aQE: weight of a top image = similarity^alpha
    kreciprocal_lambda: float = knob(0.3, ge=0, le=1)  # Zhong: weight of the original (text) distance
    kreciprocal_k2: int = knob(6, ge=1)  # Zhong: local query expansion over the k2 nearest
    eval_batch_size: int = knob(256, ge=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = knob(0, ge=0)  # torch's intra-op threads on the CPU; 0: torch's default (one per core)

    def __post_init__(self) -> None:
        _validate(self)

    def path(self, name: str) -> Path:
        """A path parameter resolved against the repository root (notebooks run elsewhere)."""
        return resolve(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Config:
        _check_keys(overrides, source="overrides")
        return _build({**self.to_dict(), **overrides}, source="overrides")


def differences(cfg: Config) -> dict[str, Any]:
    """The parameters whose value is not the default (the reference recipe's), in field order."""
    defaults = Config().to_dict()
    return {k: v for k, v in cfg.to_dict().items() if v != defaults[k]}


def valid_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def profile_path(profile: str | Path) -> Path:
    """`demo` -> configs/demo.yaml; a YAML path as given (relative: to the cwd, else the repository root)."""
    path = Path(profile)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{profile}.yaml"
    elif not path.is_absolute() and not path.exists():
        path = REPO_ROOT / path
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no profile {str(profile)!r}: expected {path} (profiles: {', '.join(known)})")
    return path


def load(profile: str | Path = "demo", **overrides: Any) -> Config:
    """A profile (name or YAML path, following its `extends:`), then overrides of the declared types."""
    path = profile_path(profile)
    values = _profile_values(path, seen=())
    values.setdefault("profile", path.stem)
    _check_keys(overrides, source="overrides")
    return _build({**values, **overrides}, source=f"{path} + overrides" if overrides else str(path))


def _profile_values(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: '{EXTENDS_KEY}' goes round in a circle: {' -> '.join(map(str, seen))}")
    values = read_yaml(path)
    _check_keys({k: v for k, v in values.items() if k != EXTENDS_KEY}, source=str(path))
    base = values.pop(EXTENDS_KEY, None)
    if base is None:
        return values
    base_path = profile_path(base if Path(str(base)).suffix not in (".yaml", ".yml")
                             else path.parent / str(base))
    inherited = _profile_values(base_path, (*seen, path.resolve()))
    inherited.pop("profile", None)  # a profile is named after itself, not its base
    return {**inherited, **values}


class DuplicateKey(yaml.constructor.ConstructorError, ConfigError):
    """A key given twice in one YAML mapping (plain YAML would keep the last silently)."""


class _UniqueKeys(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                problem = f"{key} is given twice (lines {seen[key]} and {line}): keep one"
                raise DuplicateKey(None, None, problem, key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """YAML text with the safe loader, a key given twice refused."""
    return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping; a syntax error or a key given twice names the file, line and column."""
    try:
        values = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        if isinstance(err, DuplicateKey):
            raise ConfigError(f"{where}: {err.problem}") from None
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read ({err})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter: value, got {type(values).__name__}")
    return values


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["lr=1e-5", "attribute_augmentation=false"]` -> `{"lr": 1e-05, "attribute_augmentation": False}`."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value")
        if key.strip() in parsed:
            raise ConfigError(f"{key.strip()} is given twice on the command line: keep one")
        try:
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
    _check_keys(parsed, source="command line")
    return parsed


def as_overrides(value: Any) -> dict[str, Any]:
    """A notebook's `overrides`: a mapping, its JSON / YAML text (as papermill's -p passes it), None or ""."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = load_yaml(value)
        except yaml.YAMLError:
            raise ConfigError(f"overrides {value!r} is not valid JSON or YAML, or gives a key twice; write a "
                              "mapping, e.g. '{\"query_policy\": \"none\"}'") from None
    if not isinstance(value, typing.Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"overrides must be a mapping of parameter: value, e.g. {{\"lr\": 1e-4}} (or its "
                          f"JSON / YAML text), got {type(value).__name__} {value!r}")
    _check_keys(dict(value), source="overrides")
    return dict(value)


def to_yaml(cfg: Config, provenance: dict[str, Any] | None = None) -> str:
    """Every parameter, in field order, plus what produced the run under `_run`."""
    data = cfg.to_dict()
    if provenance:
        data[PROVENANCE_KEY] = provenance
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def load_saved(path: str | Path) -> Config:
    """A run's params.yaml (or any complete parameter file); provenance is ignored."""
    data = read_yaml(Path(path))
    data.pop(PROVENANCE_KEY, None)
    _check_keys(data, source=str(path))
    return _build(data, source=str(path))


def _check_keys(values: dict[str, Any], source: str) -> None:
    unknown = sorted(set(values) - set(valid_keys()))
    if unknown:
        renamed = [f"{k} is " + ("now " if " " not in RENAMED[k] else "") + RENAMED[k]
                   for k in unknown if k in RENAMED]
        hint = f" ({'; '.join(renamed)})" if renamed else ""
        raise ConfigError(f"{source}: unknown parameter(s) {', '.join(unknown)}{hint}; "
                          f"valid keys: {', '.join(valid_keys())}")


def _build(values: dict[str, Any], source: str) -> Config:
    hints = typing.get_type_hints(Config)
    clean = {name: _coerce(name, value, hints[name], source) for name, value in values.items()}
    try:
        return Config(**clean)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _validate(cfg: Config) -> None:
    """Ranges and choices of every field, then the rules that join several fields."""
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        for item in value if isinstance(value, list) else [value]:
            problem = _out_of_range(item, f.metadata)
            if problem:
                raise ConfigError(f"{f.name}={value!r} {problem}")
    if cfg.stop_epoch > cfg.schedule_epochs:
        raise ConfigError(f"stop_epoch={cfg.stop_epoch} is past schedule_epochs={cfg.schedule_epochs} "
                          "(training stops at or before the end of the cosine schedule)")
    jitter = cfg.photometric_jitter
    if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
        raise ConfigError(f"photometric_jitter={jitter} must be [brightness, contrast, saturation, hue], "
                          "each >= 0 and hue <= 0.5 (torchvision's ColorJitter)")
    if cfg.submit_epoch > cfg.stop_epoch:
        raise ConfigError(f"submit_epoch={cfg.submit_epoch} is past stop_epoch={cfg.stop_epoch}: that epoch "
                          "is never trained (0 submits the best val epoch)")
    if not cfg.wise_alphas:
        raise ConfigError("wise_alphas=[] must hold at least one alpha (one value fixes WiSE-FT's alpha)")
    depth = min(cfg.rerank_depth_car, cfg.rerank_depth_person)
    used = {"topk": cfg.topk, "rerank_m": cfg.rerank_m if cfg.rerank in ("a3r", "aqe") else 0,
            "rerank_k": cfg.rerank_k if cfg.rerank in ("a3r", "kreciprocal") else 0,
            "kreciprocal_k2": cfg.kreciprocal_k2 if cfg.rerank == "kreciprocal" else 0}
    over = [f"{key}={value}" for key, value in used.items() if value > depth]
    if cfg.rerank != "none" and over:
        raise ConfigError(f"rerank={cfg.rerank} re-ranks the first {depth} candidates (rerank_depth_car, "
                          f"rerank_depth_person): {', '.join(over)} must be <= {depth}")
    if not DEVICE.fullmatch(cfg.device):
        raise ConfigError(f"device={cfg.device!r} must be auto, cpu, cuda or cuda:N")
    if cfg.run_name and (cfg.run_name in (".", "..") or "/" in cfg.run_name or "\\" in cfg.run_name
                         or cfg.run_name != cfg.run_name.strip() or not cfg.run_name.isprintable()
                         or len(cfg.run_name.encode("utf-8")) > MAX_RUN_NAME_BYTES):
        shown = f"{cfg.run_name[:60]!r}" + ("..." if len(cfg.run_name) > 60 else "")
        raise ConfigError(f"run_name={shown} must be a plain folder name under runs_root: no '/', no '..', "
                          f"no surrounding spaces, no control characters, at most {MAX_RUN_NAME_BYTES} bytes")
    if cfg.run_name in RESERVED_RUN_NAMES:
        raise ConfigError(f"run_name={cfg.run_name!r} is reserved (runs_root/latest points at the newest "
                          "run); choose another name")


def _out_of_range(value: Any, rules: typing.Mapping[str, Any]) -> str:
    """What is wrong with one value under its field's rules ("" when nothing)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if "choices" in rules and value not in rules["choices"]:
        return f"is not one of {', '.join(rules['choices'])}"
    bounds = (("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
              ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b))
    for name, sign, ok in bounds:
        if name in rules and not ok(value, rules[name]):
            allowed = " and ".join(f"{s} {rules[n]:g}" for n, s, _ in bounds if n in rules)
            return f"is out of range: it must be {allowed}"
    return ""


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Accept a value of the declared type (an int where a float is declared); refuse the rest."""
    if typing.get_origin(hint) is list:
        (item_type,) = typing.get_args(hint)
        if item_type is float and isinstance(value, (list, tuple)):  # YAML reads 0 as an int
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, item_type) for v in value):
            raise ConfigError(f"{source}: {name} must be a list of {item_type.__name__}, got {value!r}")
        return list(value)
    if hint is float and (isinstance(value, str) or isinstance(value, int) and not isinstance(value, bool)):
        try:  # an int where a float is declared; YAML 1.1 reads "4e-7" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{source}: {name} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value
