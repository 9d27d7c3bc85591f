"""Where every artifact of a study lives, relative to the repository root.

The Snakefile, ``dvc.yaml``, the report and ``llava-more plan`` all take paths from here, so the
layout is defined once. Datasets are shared by every study; models and results are per study.

    data/pretrain/<set>/raw/{data.json, images/, manifest.json}   raw (generated or downloaded)
    data/pretrain/<set>/clean.json                     validated records (quarantine.jsonl beside)
    data/instruct/<set>/...                            same for instruction data
    data/benchmarks/<suite>/                           local lmms-eval tasks (demo suites)
    runs/<study>/tokenizer/                            demo tokenizer (tiny studies only)
    runs/<study>/vision/<vision>/                      tiny studies: the warmed-up tiny encoder
    runs/<study>/init/<pair>/                          initial model bundle (before training)
    runs/<study>/stage1/<exp>/  stage2/<exp>/           finished model bundles
    runs/<study>/work/stage{1,2}/<exp>/                resumable checkpoints (outside rule outputs)
    results/<study>/eval/stage{1,2}/<exp>/scores.json  lmms-eval scores per model
    results/<study>/tables/ , results/<study>/plots/   the report: tables and figures,
    results/<study>/findings.md (.json), report.html   the study's claims checked, and all in one page
"""

from __future__ import annotations

DATA = "data"
RUNS = "runs"
RESULTS = "results"


def dataset_dir(kind: str, name: str) -> str:
    """``kind`` is ``pretrain`` or ``instruct``."""
    return f"{DATA}/{kind}/{name}"


def pretrain_dir(name: str) -> str:
    return dataset_dir("pretrain", name)


def instruct_dir(name: str) -> str:
    return dataset_dir("instruct", name)


def raw_dir(data_dir: str) -> str:
    """The dataset as generated or downloaded: ``data.json`` plus its image root."""
    return f"{data_dir}/raw"


def raw_json(data_dir: str) -> str:
    return f"{data_dir}/raw/data.json"


def clean_json(data_dir: str) -> str:
    return f"{data_dir}/clean.json"


def quarantine(data_dir: str) -> str:
    return f"{data_dir}/quarantine.jsonl"


def image_root(data_dir: str) -> str:
    """Image paths in the LLaVA JSON are relative to this folder (as in LCS-558K)."""
    return f"{data_dir}/raw/images"


def benchmarks_dir(suite: str) -> str:
    return f"{DATA}/benchmarks/{suite}"


def tokenizer_dir(study: str) -> str:
    return f"{RUNS}/{study}/tokenizer"


def vision_dir(study: str, vision: str) -> str:
    """Tiny studies: the warmed-up tiny encoder of a vision family (``llava-more warm-vision``)."""
    return f"{RUNS}/{study}/vision/{vision}"


def init_dir(study: str, pair: str) -> str:
    return f"{RUNS}/{study}/init/{pair}"


def stage_dir(study: str, stage: int, exp: str) -> str:
    return f"{RUNS}/{study}/stage{stage}/{exp}"


def work_dir(study: str, stage: int, exp: str) -> str:
    return f"{RUNS}/{study}/work/stage{stage}/{exp}"


def eval_dir(study: str) -> str:
    """Every model's evaluation of a study: ``stage{1,2}/<exp>/`` below it."""
    return f"{RESULTS}/{study}/eval"


def scores(study: str, stage: int, exp: str) -> str:
    return f"{eval_dir(study)}/stage{stage}/{exp}/scores.json"


def tables_dir(study: str) -> str:
    return f"{RESULTS}/{study}/tables"


def plots_dir(study: str) -> str:
    return f"{RESULTS}/{study}/plots"


def findings(study: str) -> str:
    """The study's claims checked against its numbers (``findings.json``: the same, for programs)."""
    return f"{RESULTS}/{study}/findings.md"


def findings_json(study: str) -> str:
    return f"{RESULTS}/{study}/findings.json"


def report_html(study: str) -> str:
    """Tables, findings and figures in one self-contained page."""
    return f"{RESULTS}/{study}/report.html"
