# The LLaVA-MORE study as one DAG:
#   data -> (demo tokenizer) -> initial model -> stage 1 -> stage 2 -> lmms-eval -> tables.
# Every rule calls one `llava-more` command; the logic lives in the llava_more package.
# The study comes from params.yaml (`study:`), or `--config study=NAME`.
#
# Every rule's `params` carry the params.yaml values that decide its output (llava_more.config.lineage,
# the same declaration dvc.yaml is generated from), so Snakemake's params trigger reruns exactly the
# jobs an edit of params.yaml changes, and nothing for an edit that changes no result.

import os
import re
import sys

from llava_more import paths
from llava_more.config import load_params
from llava_more.config.lineage import job_params
from llava_more.config.seeds import seed_option
from llava_more.config.schema import check_benchmarks_installed
from llava_more.errors import ConfigError

# `--config` keys this workflow reads; any other is refused rather than silently ignored.
CONFIG_KEYS = ("study",)
_unknown = sorted(set(config) - set(CONFIG_KEYS))
if _unknown:
    raise ConfigError(
        f"--config {', '.join(_unknown)}: not a setting of this workflow (it reads only: {', '.join(CONFIG_KEYS)}); "
        "hyperparameters, datasets and studies are set in params.yaml"
    )

PARAMS = load_params("params.yaml")
STUDY = PARAMS.study(config.get("study"))
check_benchmarks_installed(PARAMS)
S = STUDY.name
# How rules call the package: this interpreter by default (works without an activated venv);
# `llava-more dvc-yaml` sets LLAVA_MORE_CMD=llava-more so dvc.yaml stays portable.
LLAVA = os.environ.get("LLAVA_MORE_CMD", f"{sys.executable} -m llava_more")


def declared(rule):
    """A rule's `params` entry: the params.yaml values that decide its job's output."""
    return lambda wildcards: job_params(PARAMS, STUDY, rule, wildcards)


def one_of(names):
    """A wildcard constraint accepting exactly these names."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


wildcard_constraints:
    exp=one_of(e.id for e in STUDY.experiments),
    pair=one_of(STUDY.pairs),
    stage="1|2",


# The default target (first rule). Note: `--config` takes every argument after it, so name targets
# before it: `snakemake all --config study=paper`, or just `snakemake --config study=paper`.
# The study's products are its tables and every model bundle: naming the bundles here means that
# deleting one (to retrain it) reruns exactly what depends on it, even though the tables exist.
# A published study (config/published.py) trains nothing: its bundles are imported checkpoints.
if STUDY.published:
    from llava_more.config.published import published_bundles

    MODELS = [paths.stage_dir(S, stage, exp_id) for stage, exp_id in published_bundles(STUDY)]
else:
    MODELS = [paths.init_dir(S, pair) for pair in STUDY.pairs]
    MODELS += [paths.stage_dir(S, stage, e.id) for e in STUDY.experiments for stage in (1, 2)]


rule all:
    input:
        paths.tables_dir(S),
        MODELS,


if STUDY.published:

    include: "workflow/rules/published.smk"

else:

    include: "workflow/rules/data.smk"
    include: "workflow/rules/model.smk"
    include: "workflow/rules/train.smk"


include: "workflow/rules/eval.smk"
include: "workflow/rules/report.smk"
