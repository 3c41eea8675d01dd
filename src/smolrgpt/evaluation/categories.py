"""Question text -> Track 3 category (test.json has no category), by rules.

Kept apart from the answer normaliser so that the scorer can infer a missing category without
importing the normaliser (imports flow normaliser -> score, never back).
"""
from __future__ import annotations

import re

_HOW_MANY_UNITS = r"(?:meters?|metres?|feet|foot|ft|inches|cm|centimet\w+|millimet\w+|yards?)"
_DISTANCE_CUES = re.compile(
    r"\bdistan(?:ce|t)\b|\bhow (?:far|close|near|long)\b|\bapart\b|\bgap\b|\bseparat\w*|\bspacing\b|"
    r"\bhow many " + _HOW_MANY_UNITS + r"\b|\bhow much space\b|\bin met(?:er|re)s\b|\bfar (?:away )?from\b")
_HOW_MANY_THINGS = re.compile(r"\bhow many\b(?! " + _HOW_MANY_UNITS + r")")
_COUNT_CUES = re.compile(r"\bnumber of\b|\bcount\w*\b|\bquantity\b|"
                         r"\btally\b|\btotal\b")
_SIDE_QUESTION = re.compile(r"\b(?:which|what) side\b|\bleft or (?:the |to the )?right\b|\bright or (?:the |to the )?left\b")
_WHICH = re.compile(r"\bwhich\b")
SUPERLATIVE = (r"(?:leftmost|rightmost|closest|nearest|furthest|farthest|best|most|optimal|ideal|shortest|"
                r"smallest|extreme|suitable|appropriate|preferred|recommended|convenient)")
_SELECT_VERB = re.compile(r"\b(?:identify|select|pick|choose|name|determine|find|tell me|what is|what's)\b")
_IMPERATIVE_CHOICE = re.compile(r"^\W*(?:please\s+)?(?:pick|choose|select|identify|name|find|determine|point out)\b"
                                r"(?!\s+(?:if|whether)\b)")
_SIDE_WORD = re.compile(r"\b(?:left|right)(?:-hand|ward|wards)?\b")


def classify_question(question: str) -> str:
    """One of left_right, count, distance, mcq from the question text alone (test.json has no category).

    Order matters: "how many" wins over everything except "how many meters"; an explicit
    "which side"/"left or right" is left_right; any other "which ..." is a choice (mcq);
    then distance cues, count cues, side words, superlatives. Text with no cue at all is
    called distance, the most frequent category (49% of train).
    """
    text = " ".join(str(question).replace("<image>", " ").split()).lower()
    if _HOW_MANY_THINGS.search(text):
        return "count"
    if _SIDE_QUESTION.search(text):
        return "left_right"
    if _WHICH.search(text):
        return "mcq"
    if _DISTANCE_CUES.search(text):
        return "distance"
    if _COUNT_CUES.search(text):
        return "count"
    if _IMPERATIVE_CHOICE.match(text):
        return "mcq"
    if re.search(SUPERLATIVE, text) and (_SELECT_VERB.search(text) or re.search(r"\b(?:among|of the|out of)\b", text)):
        return "mcq"
    if _SIDE_WORD.search(text):
        return "left_right"
    if re.search(SUPERLATIVE, text):
        return "mcq"
    return "distance"
