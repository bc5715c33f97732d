"""Our metrics against lmms-eval's functions on the same predictions, where lmms-eval is installed.

lmms-eval is not a dependency of eve-vlm (and is not installed into the project's environment);
these tests skip with that reason unless it is importable.
"""

from __future__ import annotations

import pytest

from eve_vlm.eval.metrics import MME_PERCEPTION, mme_parse, mme_scores, normalize_vqa_answer, pope_metrics

REASON = "lmms-eval is not installed (optional: only used to cross-check metric definitions)"

ANSWERS = [
    "Two",
    "2",
    "two.",
    "the dog",
    "A dog.",
    "Yes!",
    "3.5",
    "5.",
    "1,000",
    "dont",
    "yes/no",
    "t-shirt",
    "t - shirt",
    "man's hat",
    "red\nand\tblue",
    "None",
    "",
    "isnt it?",
    "(left)",
    "x = 5",
]
REPLIES = ["Yes", "yes.", "No.", "y", "N", "x", "Yes, there is.", "not sure", "The answer is yes", ""]


def test_vqa_normalisation_matches_lmms_eval() -> None:
    pytest.importorskip("lmms_eval", reason=REASON)
    vqa_eval_metric = pytest.importorskip("lmms_eval.tasks._task_utils.vqa_eval_metric", reason=REASON)
    theirs = vqa_eval_metric.EvalAIAnswerProcessor()
    assert [normalize_vqa_answer(a) for a in ANSWERS] == [theirs(a) for a in ANSWERS]


def test_mme_matches_lmms_eval() -> None:
    pytest.importorskip("lmms_eval", reason=REASON)
    mme_utils = pytest.importorskip("lmms_eval.tasks.mme.utils", reason=REASON)
    assert [mme_parse(r) for r in REPLIES] == [mme_utils.parse_pred_ans(r) for r in REPLIES]

    records, theirs = [], []
    for i, subtask in enumerate(MME_PERCEPTION[:4]):
        for j, (gt, pred) in enumerate([("Yes", REPLIES[i]), ("No", REPLIES[i + 4])]):
            image = f"{subtask}/{j // 2}.jpg"
            records.append({"subtask": subtask, "image_id": image, "gt": gt, "pred": pred})
            score = float(mme_utils.parse_pred_ans(pred) == gt.lower())
            theirs.append({"question_id": image, "category": subtask, "score": score})
    assert mme_scores(records)["perception"] == pytest.approx(mme_utils.mme_aggregate_results(theirs))


def test_pope_aggregates_match_lmms_eval() -> None:
    pytest.importorskip("lmms_eval", reason=REASON)
    pope_utils = pytest.importorskip("lmms_eval.tasks.pope.utils", reason=REASON)
    preds = ["yes", "yes", "yes", "no", "no", "yes", "no"]
    labels = ["yes", "yes", "no", "no", "yes", "no", "no"]
    results = [
        {"question_id": i, "score": float(p == g), "prediction": p, "ground_truth": g}
        for i, (p, g) in enumerate(zip(preds, labels))
    ]
    ours = pope_metrics(preds, labels)
    assert ours["accuracy"] == pytest.approx(100 * pope_utils.pope_aggregate_accuracy(results))
    assert ours["precision"] == pytest.approx(100 * pope_utils.pope_aggregate_precision(results))
    assert ours["recall"] == pytest.approx(100 * pope_utils.pope_aggregate_recall(results))
    assert ours["f1"] == pytest.approx(100 * pope_utils.pope_aggregate_f1_score(results))
