"""The ``lmms_eval.models`` entry point: tells lmms-eval where our model class lives.

pyproject.toml declares ``llava_more = "llava_more.eval.lmms_plugin:MANIFEST"``. lmms-eval 0.7.3
loads every entry point of that group while ``lmms_eval.models`` initialises, and accepts a
``ModelManifest``, a list of them, or a callable returning either. ``MANIFEST`` is the callable
form on purpose: a module-level ``ModelManifest`` would import ``lmms_eval.models`` from here, and
whenever this module is imported first, that import re-enters this half-initialised module and
lmms-eval drops the plugin ("partially initialized module"). The manifest names the class by its
dotted path, so nothing heavy is imported until a run asks for ``--model llava_more``.
"""

from __future__ import annotations

MODEL_NAME = "llava_more"
MODEL_CLASS = "llava_more.eval.lmms_model.LlavaMoreLMM"


def MANIFEST():  # noqa: N802  (the entry point's published name)
    """The ``ModelManifest`` lmms-eval registers for ``--model llava_more``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=MODEL_CLASS)
