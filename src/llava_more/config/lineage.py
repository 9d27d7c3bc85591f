"""What decides each job's output: the ``params.yaml`` values every rule of the workflow reads.

One declaration per rule (``RULES``) serves both tools:

- the Snakefile passes ``job_params(...)`` as the rule's ``params``, so Snakemake's ``params`` rerun
  trigger reruns a job exactly when one of the values that determine its output changes;
- ``llava-more dvc-yaml`` lists the same keys as the stage's DVC ``params`` (``dvc_keys``), so
  ``dvc repro`` reruns the same jobs.

Values are keyed by their place in params.yaml (``protocols.demo.stage2.lr``). Snakemake sees the
effective values (defaults included); DVC is given the keys the file spells out (it cannot track a
key that is absent), and where a name contains a dot (a backbone id such as ``llama3.1-8b``) the
nearest parent key without one, since DVC reads every dot as nesting.

Not listed, on purpose: the recipe's ``LAYOUT_FIELDS`` (how a step is computed, not what:
micro-batch split, packing, fused loss, checkpoint interval) and a suite's ``batch_size`` (batched
greedy decoding gives the batch-1 answers; the evaluate rule puts it in its command, not its params).
Editing those reruns nothing. Everything a job reads from a file (data, models, the reference CSV) is an input of
the rule instead, and a change of code is not a rerun trigger of the profiles (README, "What reruns").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from llava_more.config.schema import Params, Study
from llava_more.errors import ConfigError

Key = tuple[str | int, ...]
Declared = dict[Key, Any]


def _source(section: str, params: Params, name: str) -> Declared:
    entry = params.raw.get(section, {}).get(name) or {}
    return {(section, name, key): value for key, value in entry.items()}


def _pretrain(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    return _source("pretrain_data", params, w["name"])


def _instruct(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    return _source("instruct_data", params, w["name"])


def _validate(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    return {("validation", "max_bad_fraction"): params.max_bad_fraction}


def _section(name: str) -> Callable[[Params, Study, Mapping[str, str]], Declared]:
    def declared(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
        return {(name, key): value for key, value in sorted(getattr(params, name).items())}

    return declared


def _backbone(params: Params, kind: str, backbone: str) -> Declared:
    """A backbone declared in params.yaml (``backbones.llm|vision.<id>``); built-in ones are code."""
    entry = ((params.raw.get("backbones") or {}).get(kind) or {}).get(backbone) or {}
    return {("backbones", kind, backbone, key): value for key, value in entry.items()}


def _warm_vision(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    return {**_section("demo_vision")(params, study, w), **_backbone(params, "vision", w["vision"])}


def _init_model(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    exp = study.pairs[w["pair"]]
    out: Declared = {
        ("studies", study.name, "size"): study.size,
        ("studies", study.name, "system_prompt"): study.system_prompt,
        **_backbone(params, "llm", exp.llm),
        **_backbone(params, "vision", exp.vision),
    }
    if exp.s2 and exp.s2_scales:
        out[("studies", study.name, "experiments", exp.block, "s2_scales")] = list(exp.s2_scales)
    return out


def _train(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    stage = int(w["stage"])
    recipe = params.protocols[study.protocol].stage(stage)
    return {("protocols", study.protocol, f"stage{stage}", k): v for k, v in recipe.result_fields().items()}


def _evaluate(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    suite = params.benchmark_suites[study.benchmark_suite]
    written = params.raw.get("benchmark_suites", {}).get(suite.name)
    at: Key = ("benchmark_suites", suite.name)
    out: Declared = {at if isinstance(written, list) else (*at, "tasks"): list(suite.tasks)}
    out[(*at, "dtype")] = suite.dtype
    out[(*at, "max_new_tokens")] = suite.max_new_tokens
    out[("studies", study.name, "eval_samples")] = study.eval_samples
    return out


def _import_published(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    """A published study's import: the release and what the study says the model is."""
    exp = study.experiment(w["exp"])
    at: Key = ("studies", study.name, "experiments", exp.block)
    source = "checkpoint" if int(w["stage"]) == 2 else "stage1_checkpoint"
    out: Declared = {(*at, source): getattr(exp, source), (*at, "llm"): exp.llm, (*at, "vision"): exp.vision}
    out[(*at, "s2")] = exp.s2
    out[("studies", study.name, "size")] = study.size
    return out


def _report(params: Params, study: Study, w: Mapping[str, str]) -> Declared:
    body = params.raw["studies"][study.name]
    return {("studies", study.name, key): body.get(key) for key in ("tables", "findings")}


# Rule name -> the params.yaml values its job's output depends on.
RULES: dict[str, Callable[[Params, Study, Mapping[str, str]], Declared]] = {
    "demo_pretrain_data": _pretrain,
    "demo_web_data": _pretrain,
    "fetch_pretrain_data": _pretrain,
    "recaption_data": _pretrain,
    "demo_instruct_data": _instruct,
    "fetch_instruct_data": _instruct,
    "validate_data": _validate,
    "demo_benchmarks": _section("demo_benchmarks"),
    "demo_tokenizer": _section("demo_tokenizer"),
    "warm_vision": _warm_vision,
    "init_model": _init_model,
    "import_published": _import_published,
    "train": _train,
    "evaluate": _evaluate,
    "report": _report,
}


def _declared(params: Params, study: Study, rule: str, wildcards: Mapping[str, str]) -> Declared:
    if rule not in RULES:
        raise ConfigError(f"rule {rule!r} declares no params (llava_more.config.lineage.RULES); add it there")
    return RULES[rule](params, study, dict(wildcards))


def _dotted(key: Key) -> str:
    return ".".join(str(part) for part in key)


def job_params(params: Params, study: Study, rule: str, wildcards: Mapping[str, str]) -> dict[str, Any]:
    """The values that decide the output of ``rule``'s job with ``wildcards``, keyed by their
    params.yaml path: a rule's Snakemake ``params`` (plain types, so Snakemake can compare them)."""
    return {_dotted(key): value for key, value in _declared(params, study, rule, wildcards).items()}


def _written(raw: Any, key: Key) -> bool:
    for part in key:
        if isinstance(part, int):
            if not isinstance(raw, list) or part >= len(raw):
                return False
        elif not isinstance(raw, Mapping) or part not in raw:
            return False
        raw = raw[part]
    return True


def dvc_keys(params: Params, study: Study, rule: str, wildcards: Mapping[str, str]) -> list[str]:
    """The same declaration as DVC ``params`` keys: those params.yaml spells out, each cut before the
    first name with a dot in it."""
    keys: list[str] = []
    for key in _declared(params, study, rule, wildcards):
        if not _written(params.raw, key):
            continue
        cut = next((i for i, part in enumerate(key) if "." in str(part)), len(key))
        dotted = _dotted(key[: max(cut, 1)])
        if dotted not in keys:
            keys.append(dotted)
    return keys
