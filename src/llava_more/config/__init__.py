"""``params.yaml``: the typed, validated configuration of every study."""

from llava_more.config.schema import (
    DataSource,
    Experiment,
    Params,
    Protocol,
    StageProtocol,
    Study,
    load_params,
    parse_params,
)

__all__ = [
    "DataSource", "Experiment", "Params", "Protocol", "StageProtocol", "Study", "load_params", "parse_params",
]
