"""The LLM registry: the built-in backbones (one small file per family) and those declared in params.yaml."""

from __future__ import annotations

from llava_more.errors import UnknownBackboneError
from llava_more.model.llm import gemma2, llama, phi, phi3
from llava_more.model.llm.base import SIZES, LLMSpec

_BUILTIN: dict[str, LLMSpec] = {
    spec.id: spec for module in (llama, gemma2, phi3, phi) for spec in module.SPECS
}


def builtin_llms() -> dict[str, LLMSpec]:
    return dict(_BUILTIN)


def get_llm(llm_id: str) -> LLMSpec:
    """The spec of ``llm_id`` (built-in or declared); unknown ids raise ``UnknownBackboneError``."""
    from llava_more.model.declarations import declared

    if llm_id in _BUILTIN:
        return _BUILTIN[llm_id]
    llms = declared().llms
    if llm_id in llms:
        return llms[llm_id]
    raise UnknownBackboneError("LLM", llm_id, list_llms())


def list_llms() -> list[str]:
    """Built-in ids, then declared ones."""
    from llava_more.model.declarations import declared

    return [*_BUILTIN, *declared().llms]


__all__ = ["SIZES", "LLMSpec", "builtin_llms", "get_llm", "list_llms"]
