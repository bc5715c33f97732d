"""Metrics against hand-computed cases, one group per definition (see eve_vlm/eval/metrics.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eve_vlm.eval.metrics import (
    MME_COGNITION,
    MME_PERCEPTION,
    choice_accuracy,
    exact_match,
    exact_match_accuracy,
    extract_choice_letter,
    mmbench_circular_accuracy,
    mme_parse,
    mme_scores,
    normalize_exact_match,
    normalize_vqa_answer,
    pope_metrics,
    pope_parse,
    vqa_accuracy,
    vqa_score,
)

# ------------------------------------------------------------------------------------------ VQA


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),
        ("2", "2"),
        ("two.", "2"),
        ("the dog", "dog"),
        ("A dog.", "dog"),
        ("an apple", "apple"),
        ("Yes!", "yes"),
        ("yes?", "yes"),
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("5.", "5"),
        ("1,000", "1000"),
        ("dont", "don't"),  # contraction fixed
        ("isnt", "isn't"),
        ("yes/no", "yes no"),  # a mark not touching a space becomes a space
        ("t-shirt", "t shirt"),
        ("t - shirt", "t shirt"),  # a mark touching a space is deleted
        ("man's hat", "man 's hat"),
        ("red\nand\tblue", "red and blue"),
        ("  Ten  ", "10"),
        ("none", "0"),
        ("", ""),
    ],
)
def test_normalize_vqa_answer(raw: str, expected: str) -> None:
    assert normalize_vqa_answer(raw) == expected


def test_normalize_vqa_answer_strips_at_most_32_periods() -> None:
    # The published code passes re.UNICODE (32) as the ``count`` of its period substitution.
    assert normalize_vqa_answer("." * 40) == "." * 8


@pytest.mark.parametrize(
    ("matches", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_leave_one_out_with_ten_answers(matches: int, expected: float) -> None:
    # k matching annotators: k subsets keep k-1 matches, 10-k keep k.
    # k=2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6; k=3: (3 * 2/3 + 7 * 1) / 10 = 0.9.
    gts = ["dog"] * matches + ["cat"] * (10 - matches)
    assert vqa_accuracy("dog", gts) == pytest.approx(expected)


def test_vqa_accuracy_normalises_prediction_and_answers() -> None:
    gts = ["two", "2", "Two."] + ["three"] * 7
    assert vqa_accuracy("2", gts) == pytest.approx(0.9)
    assert vqa_accuracy("The dog.", ["dog"] * 10) == 1.0


def test_vqa_accuracy_other_answer_counts() -> None:
    # 5 answers: 2 match. Subsets leaving a match out: 1 match -> 1/3; the other 3: 2/3.
    assert vqa_accuracy("yes", ["yes", "yes", "no", "no", "no"]) == pytest.approx((2 / 3 + 3 * 2 / 3) / 5)
    # A single answer: exact match (the leave-one-out subset would be empty).
    assert vqa_accuracy("Yes.", ["yes"]) == 1.0
    assert vqa_accuracy("no", ["yes"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


@given(st.integers(min_value=2, max_value=15), st.data())
def test_vqa_accuracy_matches_closed_form(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    closed_form = (k * min(1.0, (k - 1) / 3) + (n - k) * min(1.0, k / 3)) / n
    assert vqa_accuracy("x", ["x"] * k + ["y"] * (n - k)) == pytest.approx(closed_form)


def test_vqa_score_is_a_percentage() -> None:
    records = [("2", ["two"] * 2 + ["3"] * 8), ("yes", ["yes"] * 10), ("dog", ["dog"] + ["cat"] * 9)]
    assert vqa_score(records) == pytest.approx(100 * (0.6 + 1.0 + 0.3) / 3)
    with pytest.raises(ValueError):
        vqa_score([])


# ----------------------------------------------------------------------------------------- POPE


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes.", "yes"),
        ("yes", "yes"),
        ("No", "no"),
        ("No, there is not a dog.", "no"),
        ("There is no dog in the image.", "no"),
        ("The dog is not visible", "no"),
        ("Yes, there is a dog. It is not small.", "yes"),  # only the first sentence counts
        ("Nope", "yes"),  # only the words No / not / no
        ("NO", "yes"),  # case-sensitive, as in LLaVA
        ("", "yes"),
    ],
)
def test_pope_parse(answer: str, expected: str) -> None:
    assert pope_parse(answer) == expected


def test_pope_metrics_hand_computed() -> None:
    preds = ["yes", "yes", "yes", "no", "no", "yes"]
    labels = ["yes", "yes", "no", "no", "yes", "no"]
    # TP=2, FP=2, TN=1, FN=1
    m = pope_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 2, 1, 1)
    assert m["accuracy"] == pytest.approx(100 * 3 / 6)
    assert m["precision"] == pytest.approx(50.0)
    assert m["recall"] == pytest.approx(100 * 2 / 3)
    assert m["f1"] == pytest.approx(100 * 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["yes_ratio"] == pytest.approx(100 * 4 / 6)  # predicted, not ground-truth, yes ratio


def test_pope_metrics_edge_cases() -> None:
    m = pope_metrics(["no", "no"], ["yes", "no"])
    assert (m["precision"], m["recall"], m["f1"], m["yes_ratio"]) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="pope_parse"):
        pope_metrics(["Yes."], ["yes"])
    with pytest.raises(ValueError):
        pope_metrics(["yes"], ["yes", "no"])


# ------------------------------------------------------------------------------------------ MME


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("No.", "no"),
        ("y", "yes"),
        ("N", "no"),
        ("x", "other"),
        ("Yes, there is.", "yes"),
        ("no, it is not", "no"),
        ("not sure", "no"),  # "no" within the first 4 characters
        ("The answer is yes", "other"),  # nothing in the first 4 characters
        ("", "other"),
    ],
)
def test_mme_parse(answer: str, expected: str) -> None:
    assert mme_parse(answer) == expected


def _mme_record(subtask: str, image: str, gt: str, pred: str) -> dict[str, str]:
    return {"subtask": subtask, "image_id": image, "gt": gt, "pred": pred}


def test_mme_acc_plus_needs_both_questions_of_an_image() -> None:
    records = [
        # existence: img1 both right, img2 one right -> acc 75, acc+ 50
        _mme_record("existence", "1", "Yes", "Yes"),
        _mme_record("existence", "1", "No", "No"),
        _mme_record("existence", "2", "Yes", "Yes"),
        _mme_record("existence", "2", "No", "Yes"),
        # count: one image, both wrong -> 0
        _mme_record("count", "3", "Yes", "No"),
        _mme_record("count", "3", "No", "maybe"),
        # code_reasoning (cognition): both right -> 200
        _mme_record("code_reasoning", "4", "Yes", "yes."),
        _mme_record("code_reasoning", "4", "No", "no"),
    ]
    scores = mme_scores(records)
    existence = scores["subtasks"]["existence"]
    assert (existence["acc"], existence["acc_plus"], existence["score"]) == (75.0, 50.0, 125.0)
    assert scores["subtasks"]["count"]["score"] == 0.0
    assert scores["perception"] == 125.0
    assert scores["cognition"] == 200.0
    assert (scores["perception_subtasks"], scores["cognition_subtasks"]) == (2, 1)


def test_mme_totals_max_out_at_2000_and_800() -> None:
    records = [
        _mme_record(subtask, f"{subtask}-img", gt, gt)
        for subtask in (*MME_PERCEPTION, *MME_COGNITION)
        for gt in ("Yes", "No")
    ]
    scores = mme_scores(records)
    assert (scores["perception"], scores["cognition"]) == (2000.0, 800.0)


def test_mme_rejects_bad_records() -> None:
    with pytest.raises(ValueError, match="unknown MME subtask"):
        mme_scores([_mme_record("vibes", "1", "Yes", "Yes")])
    with pytest.raises(ValueError, match="yes/no"):
        mme_scores([_mme_record("count", "1", "Maybe", "Yes")])


# ------------------------------------------------------------------------------------------ GQA


def test_exact_match() -> None:
    assert normalize_exact_match("  Yes. ") == "yes"
    assert exact_match("Left.", "left")
    assert exact_match("T-shirt", "tshirt")  # punctuation deleted, not replaced
    assert not exact_match("on the left", "left")
    assert exact_match_accuracy([("Yes.", "yes"), ("red", "blue")]) == 50.0


# ---------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        ("(B)", "B"),
        ("B)", "B"),
        ("[B]", "B"),
        ("B. cat", "B"),
        ("B: cat", "B"),
        (" b ", None),  # lowercase letters are words, not options
        ("The answer is B", "B"),
        ("The answer is B.", "B"),
        ("Answer: (C)", "C"),
        ("the correct answer is option D", "D"),
        ("I think C is right", "C"),  # one lone capital letter
        ("A", "A"),
        ("A dog is in the picture", None),  # article "A", not an option
        ("Either B or C", None),  # two letters: undecidable
        ("E", None),  # beyond the 4 options
        ("Bird", None),
        ("", None),
    ],
)
def test_extract_choice_letter(answer: str, expected: str | None) -> None:
    assert extract_choice_letter(answer, num_options=4) == expected


def test_extract_choice_letter_with_option_texts() -> None:
    options = ["dog", "cat", "bird"]
    assert extract_choice_letter("Cat.", options=options) == "B"
    assert extract_choice_letter("D", options=options) is None  # 3 options
    assert extract_choice_letter("E", num_options=5) == "E"
    with pytest.raises(ValueError):
        extract_choice_letter("A", num_options=0)


def test_choice_accuracy() -> None:
    assert choice_accuracy([("B", "B", 4), ("(A)", "C", 4), ("The answer is C", "C", 3)]) == pytest.approx(
        200 / 3
    )


def test_mmbench_circular_counts_a_question_only_if_every_shift_is_right() -> None:
    records = [
        # question 7: 4 shifts, all right -> correct
        {"index": 7, "shift": 0, "pred": "B", "gt": "B"},
        {"index": 7, "shift": 1, "pred": "A.", "gt": "A"},
        {"index": 7, "shift": 2, "pred": "(D)", "gt": "D"},
        {"index": 7, "shift": 3, "pred": "The answer is C", "gt": "C"},
        # question 8: right first, wrong on a shift -> wrong
        {"index": 8, "shift": 0, "pred": "A", "gt": "A"},
        {"index": 8, "shift": 1, "pred": "A", "gt": "B"},
        # question 9: wrong first -> wrong
        {"index": 9, "shift": 0, "pred": "cat", "gt": "A", "options": ["dog", "cat"]},
        {"index": 9, "shift": 1, "pred": "dog", "gt": "B", "options": ["cat", "dog"]},
    ]
    result = mmbench_circular_accuracy(records)
    assert result["num_questions"] == 3
    assert result["circular_accuracy"] == pytest.approx(100 / 3)
    assert result["first_pass_accuracy"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        mmbench_circular_accuracy([])
