"""The typed form of ``params.yaml``: protocols, data sources, benchmark suites and studies.

``load_params`` reads and validates the whole file before any work starts. Every problem is a
``ConfigError`` whose message names the key path (``studies.demo.experiments[1].vison``), what is
wrong and, where it can, the valid choices. Nothing here imports torch, so validation stays fast.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from llava_more.errors import ConfigError

SIZES = ("tiny", "real")
TABLE_NAMES = ("table1_llm", "table2_vision", "table3_s2", "table4_pretrain_data", "readme")
EXPERIMENT_KEYS = ("llm", "vision", "s2", "pretrain")


def _where(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _check_keys(mapping: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """Fail on a non-mapping, an unknown key (with a did-you-mean) or a missing required key."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{path or 'params.yaml'}: expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{_where(path, key)}: unknown key{hint}; allowed keys here: {', '.join(allowed)}"
            )
    for key in required:
        if key not in mapping:
            raise ConfigError(f"{_where(path, key)}: required key is missing")
    return dict(mapping)


def _typed(value: Any, kind: type | tuple[type, ...], path: str) -> Any:
    # bool is an int in Python; a YAML `true` where a number belongs is a typo, not a 1.
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}: expected {names}, got {value!r}")
    return value


def _choice(value: Any, choices: tuple[str, ...], path: str) -> str:
    if value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}")
    return value


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class StageProtocol:
    """Hyperparameters of one training stage (the keys of ``protocols.<name>.stage1|stage2``)."""

    epochs: float
    global_batch: int
    per_device_batch: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    scheduler: str
    max_length: int
    precision: str
    tf32: bool
    gradient_checkpointing: bool
    deepspeed: str
    image_aspect_ratio: str
    group_by_length: bool
    save_every_steps: int
    lora_r: int = 0
    packing: bool = False
    pack_tokens: int = 0
    micro_tokens: int = 0
    fused_loss: bool = False

    OPTIONAL = ("lora_r", "packing", "pack_tokens", "micro_tokens", "fused_loss")

    CHOICES = {
        "scheduler": ("cosine", "linear", "constant_with_warmup"),
        "precision": ("bf16", "fp16", "fp32"),
        "deepspeed": ("none", "zero2", "zero3"),
        "image_aspect_ratio": ("square", "pad"),
    }

    @classmethod
    def parse(cls, raw: Any, path: str) -> StageProtocol:
        names = tuple(f.name for f in fields(cls))
        required = tuple(f.name for f in fields(cls) if f.name not in cls.OPTIONAL)
        raw = _check_keys(raw, path, names, required)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            where = _where(path, f.name)
            value = raw[f.name]
            if f.name in cls.CHOICES:
                values[f.name] = _choice(value, cls.CHOICES[f.name], where)
            elif f.type in ("bool",):
                values[f.name] = _typed(value, bool, where)
            elif f.type in ("int",):
                values[f.name] = _typed(value, int, where)
            else:
                values[f.name] = _typed(value, float, where)
        stage = cls(**values)
        if stage.global_batch <= 0 or stage.per_device_batch <= 0:
            raise ConfigError(f"{path}: global_batch and per_device_batch must be positive")
        if stage.global_batch % stage.per_device_batch:
            raise ConfigError(
                f"{path}: global_batch {stage.global_batch} is not a multiple of per_device_batch "
                f"{stage.per_device_batch}"
            )
        if not 0 <= stage.warmup_ratio < 1:
            raise ConfigError(f"{_where(path, 'warmup_ratio')}: must be in [0, 1)")
        if stage.lr <= 0 or stage.epochs <= 0:
            raise ConfigError(f"{path}: lr and epochs must be positive")
        return stage

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Protocol:
    name: str
    stage1: StageProtocol
    stage2: StageProtocol

    def stage(self, number: int) -> StageProtocol:
        return self.stage1 if number == 1 else self.stage2


# --------------------------------------------------------------------------- data sources

# Which keys each kind of source takes: (allowed, required).
PRETRAIN_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llava-pretrain": (("source", "hf_dataset", "local_path"), ("source", "hf_dataset")),
    "web-subset": (
        ("source", "metadata", "caption_field", "size", "seed", "local_path", "oversample"),
        ("source", "metadata", "caption_field", "size", "seed"),
    ),
    "mix": (("source", "parts", "size", "seed"), ("source", "parts", "size", "seed")),
    # Dense captions written by a captioning model (one of our bundles or an HF image-text-to-text
    # id) for the images of another pretrain_data entry: a Recap-style variant of any source.
    "recaption": (("source", "from", "model", "batch_size"), ("source", "from", "model")),
    "demo": (("source", "kind", "size", "seed"), ("source", "kind", "size", "seed")),
    # A demo set served by a local HTTP server and downloaded through img2dataset, like LAION/Recap.
    "demo-web": (("source", "kind", "size", "seed"), ("source", "kind", "size", "seed")),
}
INSTRUCT_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "llava-instruct": (("source", "hf_dataset", "json", "local_path"), ("source", "hf_dataset", "json")),
    "demo": (("source", "size", "seed", "mix", "max_turns"), ("source", "size", "seed")),
}
DEMO_PRETRAIN_KINDS = ("lcs", "alttext", "recap", "mix")


@dataclass(frozen=True)
class DataSource:
    """One dataset entry of ``pretrain_data`` or ``instruct_data``; ``options`` keeps its other keys."""

    name: str
    source: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_demo(self) -> bool:
        return self.source in ("demo", "demo-web")

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


def _parse_source(
    name: str, raw: Any, path: str, kinds: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], base_dir: Path
) -> DataSource:
    if not isinstance(raw, Mapping) or "source" not in raw:
        raise ConfigError(f"{path}.source: required key is missing (one of {', '.join(kinds)})")
    source = _choice(raw["source"], tuple(kinds), f"{path}.source")
    allowed, required = kinds[source]
    raw = _check_keys(raw, path, allowed, required)
    for key in ("size", "seed"):
        if key in raw:
            _typed(raw[key], int, f"{path}.{key}")
    if raw.get("size", 1) <= 0:
        raise ConfigError(f"{path}.size: must be positive")
    if source in ("demo", "demo-web") and "kind" in raw:
        _choice(raw["kind"], DEMO_PRETRAIN_KINDS, f"{path}.kind")
    local = raw.get("local_path")
    if local is not None:
        local_path = Path(local) if Path(local).is_absolute() else base_dir / local
        if not local_path.exists():
            raise ConfigError(
                f"{path}.local_path: {local_path} does not exist; point it at your pre-staged copy "
                f"or set it to null to download"
            )
    return DataSource(name=name, source=source, options={k: v for k, v in raw.items() if k != "source"})


# --------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class Experiment:
    """One trained model: an LLM, a vision encoder, S2 on/off and a pre-training set."""

    llm: str
    vision: str
    s2: bool
    pretrain: str
    s2_scales: tuple[int, ...] | None = None

    @property
    def pair_id(self) -> str:
        """The initial model (before any training): LLM x encoder x S2."""
        return f"{self.llm}_{self.vision}" + ("_s2" if self.s2 else "")

    @property
    def id(self) -> str:
        return f"{self.pair_id}_{self.pretrain}"

    def value(self, key: str) -> Any:
        return getattr(self, key)


@dataclass(frozen=True)
class Study:
    name: str
    size: str
    protocol: str
    instruct: str
    benchmarks: tuple[str, ...]
    benchmark_suite: str
    eval_samples: int | None
    eval_untrained: tuple[str, ...]  # experiments whose stage-1 model is evaluated too
    experiments: tuple[Experiment, ...]
    tables: dict[str, tuple[str, ...]]  # table name -> experiment ids, in study order
    # False: the LLMs' chat templates without their default system prompt (template ids <id>+no-system).
    system_prompt: bool = True

    def experiment(self, exp_id: str) -> Experiment:
        for exp in self.experiments:
            if exp.id == exp_id:
                return exp
        raise ConfigError(f"study {self.name!r} has no experiment {exp_id!r}")

    @property
    def pairs(self) -> dict[str, Experiment]:
        """One representative experiment per initial model (pair id)."""
        out: dict[str, Experiment] = {}
        for exp in self.experiments:
            out.setdefault(exp.pair_id, exp)
        return out

    @property
    def pretrain_sets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(exp.pretrain for exp in self.experiments))


STUDY_KEYS = (
    "size", "protocol", "instruct", "benchmarks", "eval_samples", "eval_untrained", "experiments", "tables",
    "pretrain", "system_prompt",
)


def _expand_block(raw: Any, path: str, default_pretrain: str | None) -> list[Experiment]:
    raw = _check_keys(raw, path, EXPERIMENT_KEYS + ("s2_scales",), ("llm", "vision"))
    axes: dict[str, list[Any]] = {}
    for key in EXPERIMENT_KEYS:
        value = raw.get(key, {"s2": False, "pretrain": default_pretrain}.get(key))
        if value is None:
            raise ConfigError(f"{_where(path, key)}: required (no study-level default)")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(f"{_where(path, key)}: empty list")
        for v in values:
            _typed(v, bool if key == "s2" else str, _where(path, key))
        axes[key] = values
    scales = raw.get("s2_scales")
    if scales is not None:
        if not isinstance(scales, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in scales):
            raise ConfigError(f"{path}.s2_scales: expected a list of integers (pixels), got {scales!r}")
        scales = tuple(scales)
    return [
        Experiment(llm=llm, vision=vision, s2=s2, pretrain=pretrain, s2_scales=scales if s2 else None)
        for llm, vision, s2, pretrain in itertools.product(*(axes[k] for k in EXPERIMENT_KEYS))
    ]


def _table_rows(name: str, raw: Any, path: str, experiments: tuple[Experiment, ...]) -> tuple[str, ...]:
    """A table is a filter over the study's experiments, or a list of filters (their union)."""
    filters = raw if isinstance(raw, list) else [raw]
    rows: list[str] = []
    for i, flt in enumerate(filters):
        where = f"{path}[{i}]" if isinstance(raw, list) else path
        flt = _check_keys(flt, where, EXPERIMENT_KEYS)
        matched = [
            exp.id for exp in experiments
            if all(exp.value(k) in (v if isinstance(v, list) else [v]) for k, v in flt.items())
        ]
        if not matched:
            raise ConfigError(f"{where}: the filter {dict(flt)} matches no experiment of the study")
        rows += [m for m in matched if m not in rows]
    # Rows follow the study's experiment order, whatever the filter order.
    order = {exp.id: i for i, exp in enumerate(experiments)}
    return tuple(sorted(rows, key=order.__getitem__))


@dataclass(frozen=True)
class Params:
    """The whole ``params.yaml``."""

    default_study: str
    protocols: dict[str, Protocol]
    pretrain_data: dict[str, DataSource]
    instruct_data: dict[str, DataSource]
    benchmark_suites: dict[str, tuple[str, ...]]
    studies: dict[str, Study]
    max_bad_fraction: float = 0.01
    demo_benchmarks: dict[str, int] = field(default_factory=dict)
    demo_tokenizer: dict[str, int] = field(default_factory=dict)
    demo_vision: dict[str, int] = field(default_factory=dict)
    path: Path | None = None

    def study(self, name: str | None = None) -> Study:
        name = name or self.default_study
        if name not in self.studies:
            raise ConfigError(f"study {name!r} is not defined in params.yaml; studies: {', '.join(self.studies)}")
        return self.studies[name]


TOP_KEYS = (
    "study", "protocols", "pretrain_data", "instruct_data", "benchmark_suites", "studies", "validation",
    "demo_benchmarks", "demo_tokenizer", "demo_vision", "backbones",
)
REQUIRED_TOP_KEYS = ("study", "protocols", "pretrain_data", "instruct_data", "benchmark_suites", "studies")


def parse_params(raw: Any, base_dir: Path = Path("."), check_backbones: bool = True) -> Params:
    """Validate a loaded ``params.yaml`` mapping and return its typed form."""
    raw = _check_keys(raw, "", TOP_KEYS, REQUIRED_TOP_KEYS)
    from llava_more.model.declarations import declare  # backbones beside the built-in registry

    declare(raw.get("backbones"), base_dir)
    validation = _check_keys(raw.get("validation") or {}, "validation", ("max_bad_fraction",))
    max_bad = _typed(validation.get("max_bad_fraction", 0.01), float, "validation.max_bad_fraction")
    if not 0 <= max_bad < 1:
        raise ConfigError("validation.max_bad_fraction: must be in [0, 1)")
    demo_bench = _check_keys(raw.get("demo_benchmarks") or {}, "demo_benchmarks", ("size", "seed"))
    demo_tok = _check_keys(raw.get("demo_tokenizer") or {}, "demo_tokenizer", ("vocab_size",))
    demo_vision = _check_keys(raw.get("demo_vision") or {}, "demo_vision", ("steps", "seed"))
    for where, value in (
        ("demo_benchmarks.size", demo_bench.setdefault("size", 200)),
        ("demo_benchmarks.seed", demo_bench.setdefault("seed", 0)),
        ("demo_tokenizer.vocab_size", demo_tok.setdefault("vocab_size", 2000)),
        ("demo_vision.steps", demo_vision.setdefault("steps", 300)),
        ("demo_vision.seed", demo_vision.setdefault("seed", 0)),
    ):
        _typed(value, int, where)
    protocols = {}
    for name, body in _check_keys(raw["protocols"], "protocols", tuple(raw["protocols"] or ())).items():
        body = _check_keys(body, f"protocols.{name}", ("stage1", "stage2"), ("stage1", "stage2"))
        protocols[name] = Protocol(
            name,
            StageProtocol.parse(body["stage1"], f"protocols.{name}.stage1"),
            StageProtocol.parse(body["stage2"], f"protocols.{name}.stage2"),
        )
    pretrain = {
        name: _parse_source(name, body, f"pretrain_data.{name}", PRETRAIN_SOURCES, base_dir)
        for name, body in (raw["pretrain_data"] or {}).items()
    }
    for name, src in pretrain.items():
        if src.source == "recaption" and (src.get("from") not in pretrain or src.get("from") == name):
            raise ConfigError(
                f"pretrain_data.{name}.from: {src.get('from')!r} is not another pretrain_data entry; "
                f"entries: {', '.join(pretrain)}"
            )
        if src.source == "mix":
            for part in src.get("parts") or []:
                if part not in pretrain or part == name:
                    raise ConfigError(
                        f"pretrain_data.{name}.parts: {part!r} is not another pretrain_data entry; "
                        f"entries: {', '.join(pretrain)}"
                    )
    instruct = {
        name: _parse_source(name, body, f"instruct_data.{name}", INSTRUCT_SOURCES, base_dir)
        for name, body in (raw["instruct_data"] or {}).items()
    }
    suites = {}
    for name, tasks in (raw["benchmark_suites"] or {}).items():
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"benchmark_suites.{name}: expected a non-empty list of lmms-eval task names")
        suites[name] = tuple(tasks)

    studies = {}
    for name, body in (raw["studies"] or {}).items():
        studies[name] = _parse_study(name, body, protocols, pretrain, instruct, suites, check_backbones)

    default = raw["study"]
    if default not in studies:
        raise ConfigError(f"study: {default!r} is not one of the defined studies ({', '.join(studies)})")
    return Params(default, protocols, pretrain, instruct, suites, studies, max_bad, demo_bench, demo_tok, demo_vision)


def _parse_study(name, body, protocols, pretrain, instruct, suites, check_backbones) -> Study:
    path = f"studies.{name}"
    body = _check_keys(body, path, STUDY_KEYS, ("size", "protocol", "instruct", "benchmarks", "experiments"))
    size = _choice(body["size"], SIZES, f"{path}.size")
    protocol = _choice(body["protocol"], tuple(protocols), f"{path}.protocol")
    instruct_name = _choice(body["instruct"], tuple(instruct), f"{path}.instruct")
    suite = _choice(body["benchmarks"], tuple(suites), f"{path}.benchmarks")
    samples = body.get("eval_samples")
    if samples is not None and (_typed(samples, int, f"{path}.eval_samples") <= 0):
        raise ConfigError(f"{path}.eval_samples: must be positive or null (all samples)")
    default_pretrain = body.get("pretrain")

    blocks = body["experiments"]
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(f"{path}.experiments: expected a non-empty list of experiment blocks")
    experiments: list[Experiment] = []
    for i, block in enumerate(blocks):
        for exp in _expand_block(block, f"{path}.experiments[{i}]", default_pretrain):
            where = f"{path}.experiments[{i}]"
            if exp.pretrain not in pretrain:
                raise ConfigError(
                    f"{where}.pretrain: {exp.pretrain!r} is not a pretrain_data entry; "
                    f"entries: {', '.join(pretrain)}"
                )
            if check_backbones:
                _check_backbones(exp, size, where)
            if exp not in experiments:
                experiments.append(exp)
    experiments_t = tuple(experiments)
    ids = [e.id for e in experiments_t]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}.experiments: two experiments share an id but differ (s2_scales?)")
    tables_raw = body.get("tables") or {}
    tables_raw = _check_keys(tables_raw, f"{path}.tables", TABLE_NAMES)
    tables = {t: _table_rows(t, f, f"{path}.tables.{t}", experiments_t) for t, f in tables_raw.items()}
    return Study(
        name=name,
        size=size,
        protocol=protocol,
        instruct=instruct_name,
        benchmarks=suites[suite],
        benchmark_suite=suite,
        eval_samples=samples,
        eval_untrained=_untrained(body.get("eval_untrained", False), f"{path}.eval_untrained", experiments_t),
        experiments=experiments_t,
        tables=tables,
        system_prompt=_typed(body.get("system_prompt", True), bool, f"{path}.system_prompt"),
    )


def _untrained(raw: Any, path: str, experiments: tuple[Experiment, ...]) -> tuple[str, ...]:
    """``eval_untrained``: true (every experiment), false, or a filter / list of filters like a table's."""
    if isinstance(raw, bool):
        return tuple(e.id for e in experiments) if raw else ()
    return _table_rows("eval_untrained", raw, path, experiments)


def _check_backbones(exp: Experiment, size: str, where: str) -> None:
    """Unknown ids and impossible S2 scales fail here, before any job is planned."""
    from llava_more.model import get_llm, get_vision  # registry only: no torch work

    try:
        get_llm(exp.llm)
    except ConfigError as err:
        raise ConfigError(f"{where}.llm: {err}") from None
    try:
        vision = get_vision(exp.vision)
    except ConfigError as err:
        raise ConfigError(f"{where}.vision: {err}") from None
    if exp.s2:
        try:
            vision.s2_scales(size, exp.s2_scales)
        except ConfigError as err:
            raise ConfigError(f"{where}.s2_scales: {err}") from None


def load_params(path: str | Path = "params.yaml", check_backbones: bool = True) -> Params:
    """Read and validate ``params.yaml``; raise ``ConfigError`` naming the problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the repository root or pass --params)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    params = parse_params(raw, base_dir=path.resolve().parent, check_backbones=check_backbones)
    return Params(**{**params.__dict__, "path": path})
