"""llava-more: reproduce and extend the LLaVA-MORE study.

Importing the package registers our model classes (the S2 / register-aware LLaVA variant) with
transformers' Auto classes, so saved checkpoints load without ``trust_remote_code``.
"""

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    try:
        from llava_more.model import llava  # noqa: F401  (registration side effect)
    except ImportError:  # the model module may not exist yet in a partial checkout
        pass


_register_auto_classes()
