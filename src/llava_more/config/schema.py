"""The typed form of ``params.yaml``: protocols, data sources, benchmark suites and studies.

``load_params`` reads and validates the whole file before any work starts. Every problem is a
``ConfigError`` whose message names the key path (``studies.demo.experiments[1].vison``), what is
wrong and, where it can, the valid choices. Nothing here imports torch, so validation stays fast.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llava_more.config.checks import check_keys, choice, safe_name, typed, where
from llava_more.config.claims import Claim, parse_findings, study_rows
from llava_more.config.recipe import StageRecipe
from llava_more.config.seeds import expand_seeds, parse_seeds, seed_suffix
from llava_more.errors import ConfigError
from llava_more.eval.benchmarks import columns_of

SIZES = ("tiny", "real")
TABLE_NAMES = ("table1_llm", "table2_vision", "table3_s2", "table4_pretrain_data", "readme")
EXPERIMENT_KEYS = ("llm", "vision", "s2", "pretrain")


# --------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Protocol:
    name: str
    stage1: StageRecipe
    stage2: StageRecipe

    def stage(self, number: int) -> StageRecipe:
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
    safe_name(name, path)
    if not isinstance(raw, Mapping) or "source" not in raw:
        raise ConfigError(f"{path}.source: required key is missing (one of {', '.join(kinds)})")
    source = choice(raw["source"], tuple(kinds), f"{path}.source")
    allowed, required = kinds[source]
    raw = check_keys(raw, path, allowed, required)
    for key in ("size", "seed"):
        if key in raw:
            typed(raw[key], int, f"{path}.{key}")
    if raw.get("size", 1) <= 0:
        raise ConfigError(f"{path}.size: must be positive")
    if source in ("demo", "demo-web") and "kind" in raw:
        choice(raw["kind"], DEMO_PRETRAIN_KINDS, f"{path}.kind")
    local = raw.get("local_path")
    if local is not None:
        local_path = Path(local) if Path(local).is_absolute() else base_dir / local
        if not local_path.exists():
            raise ConfigError(
                f"{path}.local_path: {local_path} does not exist; point it at your pre-staged copy "
                f"or set it to null to download"
            )
    return DataSource(name=name, source=source, options={k: v for k, v in raw.items() if k != "source"})


# --------------------------------------------------------------------------- benchmark suites

EVAL_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class BenchmarkSuite:
    """The benchmarks a study evaluates on, and how lmms-eval runs them (``benchmark_suites.<name>``).

    ``batch_size`` does not change an answer (batched greedy decoding is exact, tested), so editing it
    reruns nothing; ``dtype`` (on a GPU; the CPU computes in float32) and ``max_new_tokens`` (a cap on
    every task's own generation length; null: the tasks' own) do.
    """

    name: str
    tasks: tuple[str, ...]
    batch_size: int = 1
    dtype: str = "auto"
    max_new_tokens: int | None = None

    KEYS = ("tasks", "batch_size", "dtype", "max_new_tokens")


def _parse_suite(name: str, raw: Any, path: str) -> BenchmarkSuite:
    list_form = isinstance(raw, list)  # the short form: just the benchmark names
    if list_form:
        raw = {"tasks": raw}
    raw = check_keys(raw, path, BenchmarkSuite.KEYS, ("tasks",))
    tasks = raw["tasks"]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise ConfigError(f"{path}.tasks: expected a non-empty list of benchmark names")
    from llava_more.eval.benchmarks import unknown_benchmark  # the registry of names a study may list

    for i, task in enumerate(tasks):
        problem = unknown_benchmark(task, where(path if list_form else f"{path}.tasks", i))
        if problem:
            raise ConfigError(problem)
    batch = typed(raw.get("batch_size", 1), int, f"{path}.batch_size")
    if batch < 1:
        raise ConfigError(f"{path}.batch_size: must be at least 1")
    cap = raw.get("max_new_tokens")
    if cap is not None and typed(cap, int, f"{path}.max_new_tokens") < 1:
        raise ConfigError(f"{path}.max_new_tokens: must be at least 1, or null for each task's own limit")
    dtype = choice(raw.get("dtype", "auto"), EVAL_DTYPES, f"{path}.dtype")
    return BenchmarkSuite(name, tuple(tasks), batch, dtype, cap)


# --------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class Experiment:
    """One trained model: an LLM, a vision encoder, S2 on/off and a pre-training set."""

    llm: str
    vision: str
    s2: bool
    pretrain: str
    s2_scales: tuple[int, ...] | None = None
    # Where the experiment was declared: studies.<study>.experiments[block] (the first block, for
    # an experiment two blocks declare); lineage reads its explicit S2 scales from there.
    block: int = field(default=0, compare=False)
    # The training seed of a study with `seeds` (config.seeds); None in a study without.
    seed: int | None = None
    # Published studies (config/published.py): the released checkpoint (Hub id or folder) this
    # experiment evaluates instead of training it, and its pretrain-only release, if any.
    checkpoint: str | None = None
    stage1_checkpoint: str | None = None

    @property
    def _pair(self) -> str:
        return f"{self.llm}_{self.vision}" + ("_s2" if self.s2 else "")

    @property
    def pair_id(self) -> str:
        """The initial model (before any training): LLM x encoder x S2 (x the seed of its projector)."""
        return self._pair + seed_suffix(self.seed)

    @property
    def id(self) -> str:
        return f"{self._pair}_{self.pretrain}" + seed_suffix(self.seed)

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
    seeds: tuple[int, ...] | None = None  # config.seeds: each experiment trained once per seed
    findings: tuple[Claim, ...] = ()  # config.claims: the paper's conclusions, checked by the report
    # "training" (the protocol trains every experiment) or "published" (released checkpoints are
    # imported and evaluated; config/published.py).
    kind: str = "training"

    @property
    def published(self) -> bool:
        return self.kind == "published"

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


STUDY_KINDS = ("training", "published")
STUDY_KEYS = (
    "kind",
    "size",
    "protocol",
    "instruct",
    "benchmarks",
    "eval_samples",
    "eval_untrained",
    "experiments",
    "tables",
    "pretrain",
    "system_prompt",
    "seeds",
    "findings",
)


def _expand_block(raw: Any, path: str, default_pretrain: str | None, block: int) -> list[Experiment]:
    raw = check_keys(raw, path, EXPERIMENT_KEYS + ("s2_scales",), ("llm", "vision"))
    axes: dict[str, list[Any]] = {}
    for key in EXPERIMENT_KEYS:
        value = raw.get(key, {"s2": False, "pretrain": default_pretrain}.get(key))
        if value is None:
            raise ConfigError(f"{where(path, key)}: required (no study-level default)")
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(f"{where(path, key)}: empty list")
        for v in values:
            typed(v, bool if key == "s2" else str, where(path, key))
        axes[key] = values
    scales = raw.get("s2_scales")
    if scales is not None:
        if not isinstance(scales, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in scales
        ):
            raise ConfigError(f"{path}.s2_scales: expected a list of integers (pixels), got {scales!r}")
        scales = tuple(scales)
    return [
        Experiment(
            llm=llm, vision=vision, s2=s2, pretrain=pretrain, s2_scales=scales if s2 else None, block=block
        )
        for llm, vision, s2, pretrain in itertools.product(*(axes[k] for k in EXPERIMENT_KEYS))
    ]


def _table_rows(name: str, raw: Any, path: str, experiments: tuple[Experiment, ...]) -> tuple[str, ...]:
    """A table is a filter over the study's experiments, or a list of filters (their union)."""
    filters = raw if isinstance(raw, list) else [raw]
    rows: list[str] = []
    for i, flt in enumerate(filters):
        at = f"{path}[{i}]" if isinstance(raw, list) else path
        flt = check_keys(flt, at, EXPERIMENT_KEYS)
        matched = [
            exp.id
            for exp in experiments
            if all(exp.value(k) in (v if isinstance(v, list) else [v]) for k, v in flt.items())
        ]
        if not matched:
            raise ConfigError(f"{at}: the filter {dict(flt)} matches no experiment of the study")
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
    benchmark_suites: dict[str, BenchmarkSuite]
    studies: dict[str, Study]
    max_bad_fraction: float = 0.01
    demo_benchmarks: dict[str, int] = field(default_factory=dict)
    demo_tokenizer: dict[str, int] = field(default_factory=dict)
    demo_vision: dict[str, int] = field(default_factory=dict)
    path: Path | None = None
    # The mapping as read from params.yaml (before defaults): which keys a user wrote
    # (config.lineage names them to DVC).
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def study(self, name: str | None = None) -> Study:
        name = name or self.default_study
        if name not in self.studies:
            raise ConfigError(
                f"study {name!r} is not defined in params.yaml; studies: {', '.join(self.studies)}"
            )
        return self.studies[name]


TOP_KEYS = (
    "study",
    "protocols",
    "pretrain_data",
    "instruct_data",
    "benchmark_suites",
    "studies",
    "validation",
    "demo_benchmarks",
    "demo_tokenizer",
    "demo_vision",
    "backbones",
)
REQUIRED_TOP_KEYS = ("study", "protocols", "pretrain_data", "instruct_data", "benchmark_suites", "studies")


def parse_params(raw: Any, base_dir: Path = Path("."), check_backbones: bool = True) -> Params:
    """Validate a loaded ``params.yaml`` mapping and return its typed form."""
    original = copy.deepcopy(raw)
    raw = check_keys(raw, "", TOP_KEYS, REQUIRED_TOP_KEYS)
    from llava_more.model.declarations import declare  # backbones beside the built-in registry

    declare(raw.get("backbones"), base_dir)
    validation = check_keys(raw.get("validation") or {}, "validation", ("max_bad_fraction",))
    max_bad = typed(validation.get("max_bad_fraction", 0.01), float, "validation.max_bad_fraction")
    if not 0 <= max_bad < 1:
        raise ConfigError("validation.max_bad_fraction: must be in [0, 1)")
    demo_bench = check_keys(raw.get("demo_benchmarks") or {}, "demo_benchmarks", ("size", "seed"))
    demo_tok = check_keys(raw.get("demo_tokenizer") or {}, "demo_tokenizer", ("vocab_size",))
    demo_vision = check_keys(raw.get("demo_vision") or {}, "demo_vision", ("steps", "seed"))
    for at, value in (
        ("demo_benchmarks.size", demo_bench.setdefault("size", 200)),
        ("demo_benchmarks.seed", demo_bench.setdefault("seed", 0)),
        ("demo_tokenizer.vocab_size", demo_tok.setdefault("vocab_size", 2000)),
        ("demo_vision.steps", demo_vision.setdefault("steps", 300)),
        ("demo_vision.seed", demo_vision.setdefault("seed", 0)),
    ):
        typed(value, int, at)
    protocols = {}
    for name, body in check_keys(raw["protocols"], "protocols", tuple(raw["protocols"] or ())).items():
        safe_name(name, f"protocols.{name}")
        body = check_keys(body, f"protocols.{name}", ("stage1", "stage2"), ("stage1", "stage2"))
        protocols[name] = Protocol(
            name,
            StageRecipe.parse(body["stage1"], f"protocols.{name}.stage1"),
            StageRecipe.parse(body["stage2"], f"protocols.{name}.stage2"),
        )
        if protocols[name].stage1.lora_r:
            raise ConfigError(
                f"protocols.{name}.stage1.lora_r: LoRA is a stage-2 option (stage 1 trains only the projector); remove it"
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
    suites = {
        name: _parse_suite(safe_name(name, f"benchmark_suites.{name}"), body, f"benchmark_suites.{name}")
        for name, body in (raw["benchmark_suites"] or {}).items()
    }

    studies = {}
    for name, body in (raw["studies"] or {}).items():
        studies[name] = _parse_study(
            name, body, protocols, pretrain, instruct, suites, check_backbones, base_dir
        )

    default = raw["study"]
    if default not in studies:
        raise ConfigError(f"study: {default!r} is not one of the defined studies ({', '.join(studies)})")
    return Params(
        default, protocols, pretrain, instruct, suites, studies, max_bad, demo_bench, demo_tok, demo_vision,
        raw=original,
    )  # fmt: skip


def _parse_study(
    name, body, protocols, pretrain, instruct, suites, check_backbones, base_dir=Path(".")
) -> Study:
    path = f"studies.{name}"
    safe_name(name, path)
    if (
        isinstance(body, Mapping)
        and choice(body.get("kind", "training"), STUDY_KINDS, f"{path}.kind") == "published"
    ):
        from llava_more.config.published import parse_published_study

        return parse_published_study(name, body, pretrain, suites, check_backbones, base_dir)
    body = check_keys(body, path, STUDY_KEYS, ("size", "protocol", "instruct", "benchmarks", "experiments"))
    size = choice(body["size"], SIZES, f"{path}.size")
    protocol = choice(body["protocol"], tuple(protocols), f"{path}.protocol")
    instruct_name = choice(body["instruct"], tuple(instruct), f"{path}.instruct")
    suite = choice(body["benchmarks"], tuple(suites), f"{path}.benchmarks")
    samples = body.get("eval_samples")
    if samples is not None and (typed(samples, int, f"{path}.eval_samples") <= 0):
        raise ConfigError(f"{path}.eval_samples: must be positive or null (all samples)")
    default_pretrain = body.get("pretrain")

    blocks = body["experiments"]
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(f"{path}.experiments: expected a non-empty list of experiment blocks")
    experiments: list[Experiment] = []
    for i, block in enumerate(blocks):
        for exp in _expand_block(block, f"{path}.experiments[{i}]", default_pretrain, i):
            at = f"{path}.experiments[{i}]"
            if exp.pretrain not in pretrain:
                raise ConfigError(
                    f"{at}.pretrain: {exp.pretrain!r} is not a pretrain_data entry; "
                    f"entries: {', '.join(pretrain)}"
                )
            if check_backbones:
                _check_backbones(exp, size, at)
            if exp not in experiments:
                experiments.append(exp)
    seeds = parse_seeds(body.get("seeds"), f"{path}.seeds")
    experiments_t = expand_seeds(tuple(experiments), seeds)
    ids = [e.id for e in experiments_t]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}.experiments: two experiments share an id but differ (s2_scales?)")
    tables_raw = body.get("tables") or {}
    tables_raw = check_keys(tables_raw, f"{path}.tables", TABLE_NAMES)
    tables = {t: _table_rows(t, f, f"{path}.tables.{t}", experiments_t) for t, f in tables_raw.items()}
    untrained = _untrained(body.get("eval_untrained", False), f"{path}.eval_untrained", experiments_t)
    findings = parse_findings(
        body.get("findings"),
        f"{path}.findings",
        study_rows(experiments_t, untrained),
        tuple(columns_of(list(suites[suite].tasks))),
    )
    return Study(
        name=name,
        size=size,
        protocol=protocol,
        instruct=instruct_name,
        benchmarks=suites[suite].tasks,
        benchmark_suite=suite,
        eval_samples=samples,
        eval_untrained=untrained,
        experiments=experiments_t,
        tables=tables,
        system_prompt=typed(body.get("system_prompt", True), bool, f"{path}.system_prompt"),
        seeds=seeds,
        findings=findings,
    )


def _untrained(raw: Any, path: str, experiments: tuple[Experiment, ...]) -> tuple[str, ...]:
    """``eval_untrained``: true (every experiment), false, or a filter / list of filters like a table's."""
    if isinstance(raw, bool):
        return tuple(e.id for e in experiments) if raw else ()
    return _table_rows("eval_untrained", raw, path, experiments)


def _check_backbones(exp: Experiment, size: str, at: str) -> None:
    """Unknown ids and impossible S2 scales fail here, before any job is planned."""
    from llava_more.model import get_llm, get_vision  # registry only: no torch work

    try:
        get_llm(exp.llm)
    except ConfigError as err:
        raise ConfigError(f"{at}.llm: {err}") from None
    try:
        vision = get_vision(exp.vision)
    except ConfigError as err:
        raise ConfigError(f"{at}.vision: {err}") from None
    if exp.s2:
        try:
            vision.s2_scales(size, exp.s2_scales)
        except ConfigError as err:
            raise ConfigError(f"{at}.s2_scales: {err}") from None


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


def check_benchmarks_installed(params: Params) -> None:
    """Every benchmark of every suite exists in the installed lmms-eval (or is a demo task): checked by
    ``check-params`` and when the Snakefile loads, before any job starts."""
    from llava_more.eval.benchmarks import lmms_eval_task_names, unknown_benchmark

    installed = lmms_eval_task_names()
    for suite in params.benchmark_suites.values():
        key = "" if isinstance(params.raw.get("benchmark_suites", {}).get(suite.name), list) else ".tasks"
        for i, task in enumerate(suite.tasks):
            problem = unknown_benchmark(task, f"benchmark_suites.{suite.name}{key}[{i}]", installed)
            if problem:
                raise ConfigError(problem)
