"""The LLM backbone registry: ``get_llm(id)`` and ``list_llms()`` over the per-family spec files."""

from __future__ import annotations

from llava_more.errors import UnknownBackboneError
from llava_more.model.llm import gemma2, llama, phi, phi3
from llava_more.model.llm.base import SIZES, LLMSpec

_REGISTRY: dict[str, LLMSpec] = {
    spec.id: spec for module in (llama, gemma2, phi3, phi) for spec in module.SPECS
}


def get_llm(llm_id: str) -> LLMSpec:
    """The spec of ``llm_id``; unknown ids raise ``UnknownBackboneError`` listing the valid ones."""
    try:
        return _REGISTRY[llm_id]
    except KeyError:
        raise UnknownBackboneError("LLM", llm_id, list(_REGISTRY)) from None


def list_llms() -> list[str]:
    return list(_REGISTRY)


__all__ = ["SIZES", "LLMSpec", "get_llm", "list_llms"]
