"""Evaluation: our lmms-eval model plugin, the demo lmms-eval tasks, and running + checking lmms-eval.

Kept import-light on purpose: lmms-eval imports ``llava_more.eval.lmms_plugin`` (through the
``lmms_eval.models`` entry point) every time it starts, so nothing here pulls in torch.
"""
