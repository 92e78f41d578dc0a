"""Reading text in images with Tesseract, and scoring it against target strings.

Per detected line l and target t (Tesseract's line grouping, confidence = mean
word confidence / 100):

    r(t, l) = conf(l) * (1 - d(t, l))          d = normalised Levenshtein distance (rapidfuzz)

One target takes its best line; several targets are matched one-to-one by the
Hungarian method (scipy ``linear_sum_assignment``, maximising the sum of r), so
two targets cannot both claim the same line. A target without a line scores 0:

    score = (1 / T) * sum_t r(t, line(t))       legibility / accuracy: the same mean of conf / (1 - d)

Needs the ``tesseract`` binary (Debian/Ubuntu: ``apt-get install tesseract-ocr``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

_QUOTED = re.compile(r"\"([^\"]*)\"|\u201c([^\u201d]*)\u201d")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class OcrLine:
    """One line of text Tesseract found."""

    text: str
    confidence: float
    """Mean word confidence in [0, 1]."""
    box: tuple[int, int, int, int]
    """(left, top, right, bottom) in the image's pixels."""


@dataclass(frozen=True)
class OcrMatch:
    """Targets matched to lines: the reward and its two factors, plus each line's best reward."""

    score: float
    """Mean over targets of conf * (1 - d) of the matched line (0 for an unmatched target)."""
    legibility: float
    """Mean over targets of the matched line's confidence."""
    accuracy: float
    """Mean over targets of 1 - d of the matched line."""
    line_rewards: np.ndarray
    """(L,) per line: its matched target's r, else its best r over all targets (for reward maps)."""


def prompt_targets(prompt: str) -> list[str]:
    """The quoted strings of a prompt ("..." or curly quotes), in order: the text the image should show."""
    return [a or b for a, b in _QUOTED.findall(prompt) if (a or b).strip()]


def normalise(text: str, case_sensitive: bool = False) -> str:
    """Collapse whitespace (and case, unless case_sensitive) before comparing."""
    text = _SPACES.sub(" ", text).strip()
    return text if case_sensitive else text.casefold()


def read_lines(image: Image.Image, lang: str = "eng", psm: int = 11, min_confidence: float = 0.0) -> list[OcrLine]:
    """Lines of text in ``image`` (words grouped by Tesseract's block/paragraph/line numbers)."""
    import pytesseract

    data = pytesseract.image_to_data(image, lang=lang, config=f"--psm {psm}", output_type=pytesseract.Output.DICT)
    grouped: dict[tuple[int, int, int], list[int]] = {}
    for i, word in enumerate(data["text"]):
        if word.strip() and float(data["conf"][i]) >= 0:
            grouped.setdefault((data["block_num"][i], data["par_num"][i], data["line_num"][i]), []).append(i)
    lines = []
    for words in grouped.values():
        confidence = float(np.mean([float(data["conf"][i]) for i in words])) / 100.0
        if confidence < min_confidence:
            continue
        left = min(data["left"][i] for i in words)
        top = min(data["top"][i] for i in words)
        right = max(data["left"][i] + data["width"][i] for i in words)
        bottom = max(data["top"][i] + data["height"][i] for i in words)
        lines.append(OcrLine(" ".join(data["text"][i] for i in words), confidence, (left, top, right, bottom)))
    return lines


def match_targets(targets: list[str], lines: list[OcrLine], case_sensitive: bool = False) -> OcrMatch:
    """Hungarian matching of targets to lines by r = conf * (1 - d); see the module docstring."""
    from rapidfuzz.distance import Levenshtein
    from scipy.optimize import linear_sum_assignment

    if not targets:
        raise ValueError("no targets to match")
    wanted = [normalise(t, case_sensitive) for t in targets]
    seen = [normalise(line.text, case_sensitive) for line in lines]
    closeness = np.array([[1.0 - Levenshtein.normalized_distance(t, s) for s in seen] for t in wanted])
    closeness = closeness.reshape(len(targets), len(lines))  # (T, L)
    confidence = np.array([line.confidence for line in lines])  # (L,)
    reward = closeness * confidence[None, :]  # (T, L)
    rows, cols = linear_sum_assignment(reward, maximize=True)
    per_target = np.zeros((3, len(targets)))  # score, legibility, accuracy; unmatched targets stay 0
    per_target[:, rows] = np.stack([reward[rows, cols], confidence[cols], closeness[rows, cols]])
    line_rewards = reward.max(axis=0) if lines else np.zeros(0)
    line_rewards[cols] = reward[rows, cols]
    score, legibility, accuracy = per_target.mean(axis=1)
    return OcrMatch(float(score), float(legibility), float(accuracy), line_rewards)
