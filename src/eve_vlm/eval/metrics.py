"""Benchmark metrics as pure functions, each following the public definition it names.

Per-question functions return a value in [0, 1] (or a parsed label); aggregates return percentages
(0-100), the unit of the EVE paper's table. Sources of each definition (see also
shared/notes/peers.md, section 6):

* VQA accuracy (VQAv2, VizWiz, TextVQA): the EvalAI answer processor as used by LLaVA's
  ``m4c_evaluator.EvalAIAnswerProcessor`` and lmms-eval's ``vqa_eval_metric``, then the mean over the
  leave-one-out subsets of the human answers of ``min(1, #matches / 3)``.
* POPE: LLaVA ``eval_pope.py`` answer parsing; accuracy / precision / recall / F1 with "yes" as the
  positive class and the *predicted* yes ratio.
* MME: lmms-eval ``parse_pred_ans`` (Otter's rule); per subtask acc + acc+ (max 200); perception over
  10 subtasks (max 2000) and cognition over 4 (max 800), reported separately.
* GQA: exact match after lowercasing and removing punctuation (lmms-eval ``exact_match`` with
  ``ignore_case`` and ``ignore_punctuation``).
* Multiple choice (ScienceQA, SEED-Bench, MMBench): a rule-based option-letter extractor; MMBench
  uses CircularEval (a question counts only if every circular shift of its options is answered right).
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

# --------------------------------------------------------------------------------------------------
# VQA accuracy
# --------------------------------------------------------------------------------------------------

# The EvalAI tables (facebookresearch/mmf ``EvalAIAnswerProcessor``, from the official VQA evaluation
# ``vqaEval.py``). Keys are matched after lowercasing, so the few keys with capitals ("Im", "Ive",
# "Id've", "I'dve") never match; they are kept so the table equals the published one.
# fmt: off
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = [
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
]
# fmt: on
# A comma between digits ("1,000"). Commas are already dropped by the first step, so in practice this
# never fires; it is kept because it is part of the published rule.
_COMMA_IN_NUMBER = re.compile(r"(?<=\d)(,)+(?=\d)")
# A period not followed by a digit. The published pattern is r"(?!<=\d)(\.)(?!\d)": its first group is a
# (vacuous) look-ahead, not a look-behind, so "1.5" keeps its period and "5." and "end." lose theirs.
_PERIOD_NOT_IN_NUMBER = re.compile(r"\.(?!\d)")
# The published code passes ``re.UNICODE`` (== 32) positionally as ``count``: at most 32 periods go.
_PERIOD_STRIP_COUNT = 32


def _strip_punctuation(text: str) -> str:
    # Each mark is deleted where it touches a space (or the text has a comma inside a number), else
    # replaced by a space ("yes/no" -> "yes no", "t - shirt" -> "t  shirt"). The test reads the input
    # text, the replacement accumulates on the output, as in the published code.
    out = text
    comma_in_number = _COMMA_IN_NUMBER.search(text) is not None
    for mark in _PUNCTUATION:
        if mark + " " in text or " " + mark in text or comma_in_number:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out, count=_PERIOD_STRIP_COUNT)


def _digits_articles_contractions(text: str) -> str:
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words)


def normalize_vqa_answer(answer: str) -> str:
    """Normalise an answer as the EvalAI VQA processor does.

    Steps, in order: lowercase; drop ``,`` and ``?``; split possessive ``'s`` off (``"dog's"`` ->
    ``"dog 's"``); newlines and tabs become spaces; punctuation marks are deleted where they touch a
    space and replaced by a space otherwise; periods are removed unless a digit follows (``"3.5"``
    keeps its period); number words zero..ten (and "none") become digits; articles a/an/the are
    dropped; contractions written without apostrophe are fixed (``"dont"`` -> ``"don't"``); words are
    re-joined with single spaces.

    >>> [normalize_vqa_answer(s) for s in ["Two", "2", "two.", "the dog", "Yes!"]]
    ['2', '2', '2', 'dog', 'yes']
    """
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _strip_punctuation(text)
    return _digits_articles_contractions(text)


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against the human answers, in [0, 1].

    Prediction and answers are normalised with :func:`normalize_vqa_answer`. For ``n >= 2`` answers
    the score is the mean, over the ``n`` leave-one-out subsets of ``n - 1`` answers, of
    ``min(1, #answers in the subset equal to the prediction / 3)``. With 10 answers of which ``k``
    match: k=1 -> 0.3, k=2 -> 0.6, k=3 -> 0.9, k>=4 -> 1.0.

    With a single answer every leave-one-out subset is empty, so the published formula would score 0
    for any prediction; we use exact match instead (1.0 or 0.0). This only matters for custom data:
    VQAv2, VizWiz and TextVQA have 10 answers per question.
    """
    if not gt_answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in gt_answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    matches = sum(gt == pred for gt in gts)
    # Leaving out a matching answer leaves ``matches - 1`` matches, any other leaves ``matches``.
    total = sum(min(1.0, (matches - (gt == pred)) / 3.0) for gt in gts)
    return total / len(gts)


def vqa_score(records: Iterable[tuple[str, Sequence[str]]]) -> float:
    """Mean :func:`vqa_accuracy` over ``(prediction, gt_answers)`` pairs, in percent."""
    accuracies = [vqa_accuracy(pred, gts) for pred, gts in records]
    if not accuracies:
        raise ValueError("vqa_score needs at least one record")
    return 100.0 * sum(accuracies) / len(accuracies)


# --------------------------------------------------------------------------------------------------
# POPE
# --------------------------------------------------------------------------------------------------

YesNo = Literal["yes", "no"]


def pope_parse(answer: str) -> YesNo:
    """Map a free-form answer to "yes"/"no" by LLaVA's ``eval_pope.py`` rule.

    Keep the text before the first period, delete commas, split on single spaces; the answer is "no"
    if one of the words is exactly ``No``, ``not`` or ``no``, and "yes" otherwise (so an empty or
    off-topic answer counts as "yes", and ``"NO"`` too, as in the reference).

    >>> pope_parse("No, there is not a dog."), pope_parse("Yes."), pope_parse("There is no dog")
    ('no', 'yes', 'no')
    """
    first_sentence = answer.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if any(word in ("No", "not", "no") for word in words) else "yes"


def pope_metrics(preds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE metrics of parsed predictions against labels ("yes"/"no" each), "yes" being positive.

    Returns percentages ``accuracy`` = (TP+TN)/N, ``precision`` = TP/(TP+FP), ``recall`` = TP/(TP+FN),
    ``f1`` = 2PR/(P+R) and ``yes_ratio`` = share of *predicted* "yes" (LLaVA; lmms-eval reports the
    ground-truth ratio under that name), plus the raw counts ``tp``, ``fp``, ``tn``, ``fn``. An empty
    denominator gives 0.
    """
    if len(preds) != len(labels):
        raise ValueError(f"pope_metrics: {len(preds)} predictions but {len(labels)} labels")
    if not preds:
        raise ValueError("pope_metrics needs at least one prediction")
    for value in (*preds, *labels):
        if value not in ("yes", "no"):
            raise ValueError(
                f"pope_metrics expects 'yes'/'no' (parse answers with pope_parse), got {value!r}"
            )
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, labels))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, labels))
    tn = sum(p == "no" and g == "no" for p, g in zip(preds, labels))
    fn = sum(p == "no" and g == "yes" for p, g in zip(preds, labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100.0 * (tp + tn) / len(preds),
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "f1": 100.0 * f1,
        "yes_ratio": 100.0 * (tp + fp) / len(preds),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


# --------------------------------------------------------------------------------------------------
# MME
# --------------------------------------------------------------------------------------------------

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_parse(answer: str) -> Literal["yes", "no", "other"]:
    """Map an answer to "yes"/"no"/"other" by lmms-eval's ``parse_pred_ans`` (from Otter).

    Lowercase, strip, delete every period. Then: exactly "yes"/"no" -> itself; a single character
    "y"/"n" -> "yes"/"no" (other single characters -> "other"); otherwise look at the first 4
    characters only: containing "yes" -> "yes", else containing "no" -> "no" (so "not sure" and
    "nope" are "no"), else "other" (a verbose "The answer is yes" is "other", i.e. wrong).
    """
    text = answer.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text  # type: ignore[return-value]
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")  # type: ignore[return-value]
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def mme_scores(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """MME scores from records with keys ``subtask``, ``image_id``, ``gt`` ("Yes"/"No") and ``pred``.

    Per subtask: ``acc`` = percent of questions right (``mme_parse(pred)`` equals the lowercased gt),
    ``acc_plus`` = percent of images whose questions (two in MME) are *all* right, ``score`` = acc +
    acc_plus (max 200). ``perception`` sums the scores of the perception subtasks present (max 2000
    over all 10), ``cognition`` those of the cognition subtasks (max 800 over all 4); the EVEv1 paper
    reports perception only.
    """
    known = set(MME_PERCEPTION) | set(MME_COGNITION)
    # subtask -> image -> list of per-question correctness
    results: dict[str, dict[Any, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        subtask = record["subtask"]
        if subtask not in known:
            raise ValueError(f"unknown MME subtask {subtask!r}; expected one of {sorted(known)}")
        gt = str(record["gt"]).lower().strip().replace(".", "")
        if gt not in ("yes", "no"):
            raise ValueError(
                f"MME ground truth must be yes/no, got {record['gt']!r} ({subtask}, {record['image_id']})"
            )
        results[subtask][record["image_id"]].append(mme_parse(record["pred"]) == gt)
    if not results:
        raise ValueError("mme_scores needs at least one record")

    subtasks = {}
    for subtask, images in results.items():
        per_question = [ok for oks in images.values() for ok in oks]
        acc = 100.0 * sum(per_question) / len(per_question)
        acc_plus = 100.0 * sum(all(oks) for oks in images.values()) / len(images)
        subtasks[subtask] = {
            "acc": acc,
            "acc_plus": acc_plus,
            "score": acc + acc_plus,
            "num_questions": len(per_question),
            "num_images": len(images),
        }
    return {
        "perception": sum(subtasks[s]["score"] for s in MME_PERCEPTION if s in subtasks),
        "cognition": sum(subtasks[s]["score"] for s in MME_COGNITION if s in subtasks),
        "perception_subtasks": sum(s in subtasks for s in MME_PERCEPTION),
        "cognition_subtasks": sum(s in subtasks for s in MME_COGNITION),
        "subtasks": {s: subtasks[s] for s in (*MME_PERCEPTION, *MME_COGNITION) if s in subtasks},
    }


# --------------------------------------------------------------------------------------------------
# GQA (exact match)
# --------------------------------------------------------------------------------------------------

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)


def normalize_exact_match(text: str) -> str:
    """Lowercase, delete ASCII punctuation, collapse whitespace (``"Yes."`` -> ``"yes"``)."""
    return " ".join(text.lower().translate(_PUNCTUATION_TABLE).split())


def exact_match(prediction: str, answer: str) -> bool:
    """GQA correctness: equality after :func:`normalize_exact_match` of both sides."""
    return normalize_exact_match(prediction) == normalize_exact_match(answer)


def exact_match_accuracy(records: Iterable[tuple[str, str]]) -> float:
    """Percent of ``(prediction, answer)`` pairs that match exactly after normalisation."""
    hits = [exact_match(pred, gt) for pred, gt in records]
    if not hits:
        raise ValueError("exact_match_accuracy needs at least one record")
    return 100.0 * sum(hits) / len(hits)


# --------------------------------------------------------------------------------------------------
# Multiple choice (ScienceQA, SEED-Bench, MMBench)
# --------------------------------------------------------------------------------------------------

_LETTERS = "ABCDEFGHIJ"
# "B", "B.", "B)", "(B)", "[B]", "B: text", "B. text" at the very start.
_LEADING_LETTER = re.compile(r"^[(\[]?([A-J])(?:[)\]]|(?=$|[.:,;]))")
# "The answer is B", "Answer: (C)", "the correct answer is option D." ("answer" in any case).
_STATED_LETTER = re.compile(
    r"(?i:answer)\s*(?:(?i:is)\s*:?|:)?\s*(?:(?i:option)\s*)?[(\[]?([A-J])(?![A-Za-z])"
)
# A capital letter standing alone.
_LONE_LETTER = re.compile(r"(?<![A-Za-z])([A-J])(?![A-Za-z])")
# The article "A" (or pronoun "I") followed by a lowercase word is not an option letter.
_WORD_LIKE_LETTER = re.compile(r"(?<![A-Za-z])([AI]) (?=[a-z])")


def extract_choice_letter(
    answer: str, num_options: int = 4, options: Sequence[str] | None = None
) -> str | None:
    """The option letter an answer picks, or None when it cannot be told.

    ``options`` (the option texts in the order shown) override ``num_options``. Rules, first match wins:

    1. the answer starts with a letter alone: ``"B"``, ``"B."``, ``"(B)"``, ``"B) cat"``, ``"B: cat"``;
    2. it states the letter: ``"The answer is B"``, ``"Answer: (B)"``;
    3. it equals one option's text (after :func:`normalize_exact_match`): ``"cat"`` -> that letter;
    4. exactly one distinct valid capital letter stands alone in it (``"I think C"``), not counting the
       article "A" / pronoun "I" before a lowercase word.

    Letters beyond the number of options never count.
    """
    if options is not None:
        num_options = len(options)
    if not 1 <= num_options <= len(_LETTERS):
        raise ValueError(f"num_options must be in [1, {len(_LETTERS)}], got {num_options}")
    valid = _LETTERS[:num_options]
    text = answer.strip()

    for pattern in (_LEADING_LETTER, _STATED_LETTER):
        match = pattern.search(text)
        if match and match.group(1) in valid:
            return match.group(1)
    if options is not None:
        normalized = normalize_exact_match(text)
        hits = [
            letter
            for letter, option in zip(valid, options)
            if normalize_exact_match(str(option)) == normalized
        ]
        if len(hits) == 1:
            return hits[0]
    word_like = {m.start(1) for m in _WORD_LIKE_LETTER.finditer(text)}
    lone = {
        m.group(1) for m in _LONE_LETTER.finditer(text) if m.start(1) not in word_like and m.group(1) in valid
    }
    return lone.pop() if len(lone) == 1 else None


def choice_correct(
    answer: str, gt_letter: str, num_options: int = 4, options: Sequence[str] | None = None
) -> bool:
    """Whether :func:`extract_choice_letter` of ``answer`` equals ``gt_letter``."""
    return extract_choice_letter(answer, num_options, options) == gt_letter.strip().upper()


def choice_accuracy(records: Iterable[tuple[str, str, int]]) -> float:
    """Percent of ``(answer, gt_letter, num_options)`` triples answered with the right letter."""
    hits = [choice_correct(answer, gt, n) for answer, gt, n in records]
    if not hits:
        raise ValueError("choice_accuracy needs at least one record")
    return 100.0 * sum(hits) / len(hits)


def mmbench_circular_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """MMBench CircularEval over records with keys ``index`` (the original question's index),
    ``pred`` (the answer), ``gt`` (the right letter *for that shift*) and optionally ``options``
    (option texts in the order shown) and ``shift`` (0 for the original order).

    A question counts as correct only if every one of its records is answered with the right letter.
    Returns ``circular_accuracy`` (percent of questions), ``num_questions``, and, when shifts are
    given, ``first_pass_accuracy``: percent right on the original order alone (shift 0), the
    "VanillaEval" number.
    """
    by_question: dict[Any, list[bool]] = defaultdict(list)
    first_pass: list[bool] = []
    for record in records:
        ok = choice_correct(record["pred"], record["gt"], options=record.get("options") or None)
        by_question[record["index"]].append(ok)
        if record.get("shift") == 0:
            first_pass.append(ok)
    if not by_question:
        raise ValueError("mmbench_circular_accuracy needs at least one record")
    result = {
        "circular_accuracy": 100.0 * sum(all(oks) for oks in by_question.values()) / len(by_question),
        "num_questions": len(by_question),
    }
    if first_pass:
        result["first_pass_accuracy"] = 100.0 * sum(first_pass) / len(first_pass)
    return result
