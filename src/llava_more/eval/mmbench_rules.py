"""MMBench scored offline: lmms-eval's rule-based matching, no GPT judge, no random fallback.

lmms-eval's ``mmbench_*_dev`` aggregators ask a GPT model to map an answer to an option whenever
the rules cannot, and without an API they end up drawing a *random* letter. Here every answer goes
through lmms-eval's own matcher (``MMBench_Evaluator.can_infer``) and then its static extraction
(``eval_method="static"``); whatever neither reads counts as wrong. ``rule_unmatched`` (the share
of such answers) travels with the score so the tables can mark it.

Referenced from task YAMLs as ``!function llava_more.eval.mmbench_rules.<name>``.
"""

from __future__ import annotations

from typing import Any

OPTION_LETTERS = ("A", "B", "C", "D", "E")


def _utils(language: str):
    # Imported lazily: lmms-eval's MMBench modules read their YAML and set up an evaluator on import.
    if language == "en":
        from lmms_eval.tasks.mmbench import en_utils as utils
    else:
        from lmms_eval.tasks.mmbench import cn_utils as utils
    return utils


def evaluator_for(language: str):
    """lmms-eval's MMBench evaluator for ``language`` (``en`` or ``cn``): its rule matcher and scorer."""
    return _utils(language).mmbench_evaluator


def is_unmatched(doc: dict[str, Any], prediction: str, language: str) -> bool:
    """True when neither lmms-eval's rule matcher nor its static extraction finds an option letter."""
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer

    evaluator = evaluator_for(language)
    choices = {c: doc[c] for c in OPTION_LETTERS if doc.get(c) not in (None, "", "nan")}
    if evaluator.can_infer(prediction, choices):
        return False
    return not extract_mcq_answer(prediction, choices=sorted(choices))


def _process(doc: dict[str, Any], results: list[str], language: str) -> dict[str, Any]:
    data = _utils(language).mmbench_process_results(doc, results)
    data["rule_unmatched"] = 1.0 if is_unmatched(doc, results[0].strip(), language) else 0.0
    return data


def _aggregate(results: list[dict], language: str) -> float:
    overall, _, _ = evaluator_for(language).eval_result(results, eval_method="static")
    return overall * 100


def process_results_en(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    return _process(doc, results, "en")


def process_results_cn(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    return _process(doc, results, "cn")


def aggregate_en(results: list[dict]) -> float:
    """Accuracy in percent (circular variants, when present, must all be right, as in MMBench)."""
    return _aggregate(results, "en")


def aggregate_cn(results: list[dict]) -> float:
    return _aggregate(results, "cn")
