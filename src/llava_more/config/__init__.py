"""``params.yaml``: the typed, validated configuration of every study."""

from llava_more.config.recipe import LAYOUT_FIELDS, StageRecipe
from llava_more.config.schema import (
    BenchmarkSuite,
    DataSource,
    Experiment,
    Params,
    Protocol,
    Study,
    load_params,
    parse_params,
)

__all__ = [
    "LAYOUT_FIELDS",
    "BenchmarkSuite",
    "DataSource",
    "Experiment",
    "Params",
    "Protocol",
    "StageRecipe",
    "Study",
    "load_params",
    "parse_params",
]
