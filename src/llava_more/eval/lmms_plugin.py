"""The ``lmms_eval.models`` entry point: tells lmms-eval where our model class lives.

pyproject.toml declares ``llava_more = "llava_more.eval.lmms_plugin:MANIFEST"``. lmms-eval 0.7.3
loads every entry point of that group when ``lmms_eval.models`` is imported and accepts a
``ModelManifest`` (or a list of them, or a callable returning either). The manifest only names the
class by its dotted path, so this module stays cheap to import; the class itself
(``llava_more.eval.lmms_model.LlavaMoreLMM``) is imported when a run asks for ``--model llava_more``.
"""

from __future__ import annotations

from lmms_eval.models.registry_v2 import ModelManifest

MODEL_NAME = "llava_more"

MANIFEST = ModelManifest(
    model_id=MODEL_NAME,
    simple_class_path="llava_more.eval.lmms_model.LlavaMoreLMM",
)
