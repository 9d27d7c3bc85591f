"""llava-more: reproduce and extend the LLaVA-MORE study.

This top-level import is deliberately light (no torch), so that ``llava-more check-params`` and the
Snakefile start in a second. ``import llava_more.model.llava`` (which every bundle function does)
registers our model classes (the S2 / register-aware LLaVA variant) with transformers' Auto
classes, after which saved checkpoints load with ``AutoModelForImageTextToText.from_pretrained``
without ``trust_remote_code``.
"""

__version__ = "0.1.0"
