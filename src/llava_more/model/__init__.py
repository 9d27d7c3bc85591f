"""The model layer: backbone registries, the LLaVA model (plain or S2/register-aware), building and bundles.

The registries (``get_llm``, ``get_vision``, their specs) import without torch and are named here;
everything else is imported from the module that defines it (``model.builder``, ``model.bundle``,
``model.inference``...), which brings torch and transformers. Importing any of those (or
``llava_more.model.llava``) registers the ``llava_more`` model type with transformers' Auto classes.
"""

from llava_more.model.llm import LLMSpec, get_llm, list_llms
from llava_more.model.vision import VisionSpec, get_vision, list_visions

__all__ = ["LLMSpec", "VisionSpec", "get_llm", "get_vision", "list_llms", "list_visions"]
