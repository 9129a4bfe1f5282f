"""Rule-based text rewards for RL fine-tuning of VLMs: a registry of named functions (mllm_rft.md §3).

    fn(completion: str, target, **info) -> float | None            (None: skip this completion for this reward)
    reward = CombinedReward({"numeric": 0.9, "format": 0.1})
    totals, components = reward(completions, targets, infos)     # totals[i] = Σ_k w_k · r_k(i), None terms left out

`completion` is the decoded text with `<think>`/`<answer>` kept as plain text (card §5: decoding with
`skip_special_tokens=True` must not drop them). `target` is the gold answer of the sample; `info` carries per-sample
facts (`num_tokens`, `input_size`, `image_size`, `completion_ids`, `choices`) and, through `CombinedReward(kwargs=…)`,
the reward's settings (keyword-only parameters of each function). Every reward ignores info keys it does not use.

Registered rewards (the docstring of each function gives the rule and its source):

| name | value | target |
|---|---|---|
| format | 1 iff `<think>…</think>` then `<answer>…</answer>` is the whole completion | unused |
| exact_match | 1 iff normalised answer == normalised gold | str or list of str |
| numeric | 1 iff the answer is numerically equal to the gold (fractions, \\frac, %, "1,000") | number or str |
| count | 1 iff the single integer in the answer equals the gold count | int or str |
| multiple_choice | 1 iff the single option letter in the answer equals the gold letter | "B", "(B)", … |
| iou / iou_threshold | IoU of the first `[x1, y1, x2, y2]` in the answer with the gold box / 1[IoU > t] | 4 numbers |
| label | 1 iff the class name equals the label after normalisation (`_`, `-` → space) | str or list of str |
| soft_overlong | DAPO's soft overlong punishment in [−1, 0] from `info["num_tokens"]` | unused |
| repetition | (1 − unique n-grams / n-grams) · max_penalty, in [max_penalty, 0] | unused |

Skip and error rules (ours, uniform): a `target` of None gives None for every accuracy reward (a sample without
a gold; one target serves every reward of a CombinedReward, so a mixed-task batch needs one CombinedReward per task);
`numeric` also gives None when the gold does not parse as a number (TRL `accuracy_reward` skips unparseable golds
[authors' code: `trl/rewards/accuracy_rewards.py`]); a malformed gold for the other rewards is a data bug and
raises ValueError. A missing or unparseable *prediction* is a wrong answer: 0.
"""

from __future__ import annotations

import inspect
import math
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from shared.errors import ConfigError

__all__ = [
    "CombinedReward",
    "available_rewards",
    "box_iou",
    "extract_answer",
    "extract_choice",
    "get_reward",
    "last_boxed",
    "normalize_label",
    "normalize_text",
    "numbers_equal",
    "parse_box",
    "parse_number",
    "register_reward",
    "rescale_box",
]

RewardFn = Callable[..., "float | None"]
_REGISTRY: dict[str, RewardFn] = {}


# ----------------------------------------------------------------------------------------------------------- registry
def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register `fn(completion, target, *, settings…, **info) -> float | None` under `name`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def deco(fn: RewardFn) -> RewardFn:
        old = _REGISTRY.get(name)
        same = old is not None and (old.__module__, old.__qualname__) == (fn.__module__, fn.__qualname__)
        if old is not None and not same:  # re-registering the same function (a module reload) is fine
            raise ValueError(f"reward {name!r} is already registered to {old!r}")
        _REGISTRY[name] = fn
        return fn

    return deco


def available_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REGISTRY)


def get_reward(name: str) -> RewardFn:
    """The reward function registered as `name`; an unknown name raises ConfigError listing the registry."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown reward {name!r}; available rewards: {', '.join(available_rewards())}") from None


# ------------------------------------------------------------------------------------------------ answer extraction
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_FORMAT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{…}` (balanced braces), stripped; None if there is none or it is unclosed."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = start + len("\\boxed")
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def extract_answer(text: str, *, boxed_fallback: bool = False) -> str | None:
    """Content of the last `<answer>…</answer>` (the last closing tag and the last opening tag before it), stripped.

    None when there is no closed answer block; then, with `boxed_fallback`, the content of the last `\\boxed{}` of
    the whole text (EasyR1/verl math answers; card §3). An unclosed `<answer>` (a truncated completion) is no answer.
    [our reading: the last block, as the model's final word; R1-V's `re.search` takes the first.]
    """
    close = text.rfind("</answer>")
    if close >= 0:
        open_ = text.rfind("<answer>", 0, close)
        if open_ >= 0:
            return text[open_ + len("<answer>") : close].strip()
    return last_boxed(text) if boxed_fallback else None


def _check_text(completion: Any) -> str:
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a decoded string, got {type(completion).__name__}")
    return completion


@register_reward("format")
def format_reward(completion: str, target: Any = None, *, strict: bool = True, **info: Any) -> float:
    """1.0 iff the whole completion is `<think>…</think>` then `<answer>…</answer>`, else 0.0.

    Regex (DOTALL, full match): `\\s*<think>(.*?)</think>\\s*<answer>(.*?)</answer>\\s*` — the R1 template of R1-V,
    VLM-R1 and EasyR1 `r1v.py`, plus surrounding whitespace. Text after `</answer>` fails. Tags are plain text.
    `strict=True` (ours, the default) also fails when either block contains any of the four tags (duplicate or
    nested blocks: which answer counts would be ambiguous); `strict=False` is the reference regex alone, whose lazy
    groups let `<answer>1</answer><answer>2</answer>` pass.
    """
    m = _FORMAT_RE.fullmatch(_check_text(completion))
    if m is None:
        return 0.0
    if strict and any(tag in m.group(1) or tag in m.group(2) for tag in _TAGS):
        return 0.0
    return 1.0


# ------------------------------------------------------------------------------------------------------ text matching
_TRAILING_PUNCT = ".,;:!?"
_ARTICLE_RE = re.compile(r"^(?:a|an|the)\s+")


def normalize_text(s: str) -> str:
    """Normalisation of `exact_match`, in order: Unicode NFKC; casefold; whitespace runs → one space and strip;
    strip trailing `. , ; : ! ?` (repeatedly); drop ONE leading English article `a `/`an `/`the ` when a word follows
    (so the answer "A" stays "a").

    Internal punctuation is kept ("3.5" ≠ "35", "cat, dog" ≠ "cat dog"), unlike SQuAD's `normalize_answer`, which drops
    all punctuation and every article [Rajpurkar et al. 2016 evaluation script]. [our reading]
    """
    s = " ".join(unicodedata.normalize("NFKC", str(s)).casefold().split())
    s = s.rstrip(_TRAILING_PUNCT + " ")
    return _ARTICLE_RE.sub("", s, count=1)


def normalize_label(s: str) -> str:
    """`normalize_text` after `_` and `-` → space (class names like "great_white_shark")."""
    return normalize_text(re.sub(r"[_\-]", " ", str(s)))


def _golds(target: Any, who: str) -> list[str]:
    golds = [target] if isinstance(target, str) else list(target) if isinstance(target, (list, tuple)) else None
    if not golds or not all(isinstance(g, str) for g in golds):
        raise ValueError(f"{who}: target must be a string or a non-empty list of strings, got {target!r}")
    return golds


@register_reward("exact_match")
def exact_match_reward(completion: str, target: Any, *, boxed_fallback: bool = False, **info: Any) -> float | None:
    """1.0 iff `normalize_text(answer)` equals `normalize_text(gold)` for the gold or any of a list of golds.

    R1-V's accuracy falls back to string equality of the `<answer>` contents [authors' code: R1-V `grpo.py`]; the
    normalisation is ours (`normalize_text`). No answer block → 0.
    """
    if target is None:
        return None
    golds = {normalize_text(g) for g in _golds(target, "exact_match")}
    answer = extract_answer(_check_text(completion), boxed_fallback=boxed_fallback)
    return float(answer is not None and normalize_text(answer) in golds)


@register_reward("label")
def label_reward(completion: str, target: Any, *, boxed_fallback: bool = False, **info: Any) -> float | None:
    """Classification: 1.0 iff `normalize_label(answer)` equals `normalize_label(label)` (or one of a list).

    Visual-RFT's classification reward compares the `<answer>` class name with the label [authors' code:
    Visual-RFT]; its evaluation strips spaces/underscores and tests *containment*, which an answer listing several
    classes would game; we require equality after normalisation. [our reading]
    """
    if target is None:
        return None
    golds = {normalize_label(g) for g in _golds(target, "label")}
    answer = extract_answer(_check_text(completion), boxed_fallback=boxed_fallback)
    return float(answer is not None and normalize_label(answer) in golds)


# ----------------------------------------------------------------------------------------------------------- numbers
_DECIMAL = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_DECIMAL_RE = re.compile(rf"[-+]?{_DECIMAL}")
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRACTION_RE = re.compile(rf"([-+]?{_DECIMAL})\s*/\s*([-+]?{_DECIMAL})")
_LATEX_FRAC_RE = re.compile(r"([-+]?)\\frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}")
_LATEX_FRAC_SHORT_RE = re.compile(r"([-+]?)\\frac\s*(\d)(\d)")
_MAX_EXPONENT = 400
_VAR_PREFIX_RE = re.compile(r"^[A-Za-z]\s*=\s*")
_LATEX_DROP = ("\\$", "\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "$", "\\(", "\\)", "\\[", "\\]")


def _unwrap(s: str, command: str) -> str:
    """`\\command{X}` around the whole string → X (repeatedly)."""
    while s.startswith(command + "{") and s.endswith("}"):
        inner = s[len(command) + 1 : -1]
        depth = 0  # the first `{` must close at the very end
        for ch in inner:
            depth += ch == "{"
            depth -= ch == "}"
            if depth < 0:
                return s
        s = inner.strip()
    return s


def _clean_number_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).replace("\u2212", "-").strip()
    for tok in _LATEX_DROP:
        s = s.replace(tok, "")
    s = s.replace("{,}", ",").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    s = s.strip()
    for cmd in ("\\boxed", "\\text", "\\mathrm", "\\mathbf"):
        s = _unwrap(s, cmd)
    s = _VAR_PREFIX_RE.sub("", s)
    return s.strip().rstrip(".").strip()


def _parse_plain(s: str) -> Fraction | None:
    s = s.strip()
    if _THOUSANDS_RE.fullmatch(s):
        return Fraction(s.replace(",", ""))
    if _DECIMAL_RE.fullmatch(s):
        exp = re.search(r"[eE]([-+]?\d+)$", s)
        if exp and abs(int(exp.group(1))) > _MAX_EXPONENT:  # "1e999999999" would build a huge integer
            return None
        return Fraction(s)
    m = _FRACTION_RE.fullmatch(s)
    if m:
        den = Fraction(m.group(2))
        return Fraction(m.group(1)) / den if den != 0 else None
    for rx in (_LATEX_FRAC_RE, _LATEX_FRAC_SHORT_RE):
        m = rx.fullmatch(s)
        if m:
            num, den = _parse_plain(m.group(2)), _parse_plain(m.group(3))
            if num is None or den is None or den == 0:
                return None
            return (-1 if m.group(1) == "-" else 1) * num / den
    return None


def _parse_number_percent(text: Any) -> tuple[Fraction, bool] | None:
    """(value, was_percent) with the percentage already divided by 100, or None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return Fraction(text), False
    if isinstance(text, float):
        return (Fraction(text), False) if math.isfinite(text) else None
    if isinstance(text, Fraction):
        return text, False
    if not isinstance(text, str):
        return None
    s = _clean_number_text(text)
    percent = s.endswith("%")
    if percent:
        s = s[:-1].strip()
    value = _parse_plain(s)
    if value is None:
        return None
    return (value / 100, True) if percent else (value, False)


def parse_number(text: Any) -> Fraction | None:
    """An exact rational from a number-like answer, or None. Percentages are divided by 100.

    Covered: integers and decimals with sign (ASCII or U+2212 minus) and exponent ("-3", "0.50", ".5", "1e-3";
    |exponent| ≤ 400); thousands separators only in groups of three ("1,000", "12,345.5"; "1,5" is None: a
    European decimal comma is ambiguous); fractions "3/4", "-3/4"; LaTeX `\\frac{a}{b}`, `\\dfrac`, `\\tfrac`,
    `\\frac34` with numbers a, b and an optional leading sign; percentages "50%", "50\\%"; wrappers `$…$`,
    `\\(…\\)`, `\\boxed{}`, `\\text{}`, `\\left`/`\\right`, thin spaces; a leading single-letter assignment
    "x = 5"; one trailing period.
    NOT covered (→ None: a reward of 0 for a prediction, a skip for a gold): symbolic values (√2, π, e, 2\\sqrt{3}),
    expressions ("2+3", "3\\cdot 4"), mixed numbers ("1 1/2"), units or words around the number ("5 cm", "x is 5"),
    scientific notation with \\times 10^{n}, space-separated thousands, intervals, tuples, sets, equations.
    """
    parsed = _parse_number_percent(text)
    return None if parsed is None else parsed[0]


def _candidates(parsed: tuple[Fraction, bool]) -> list[Fraction]:
    value, percent = parsed
    return [value, value * 100] if percent else [value]


def numbers_equal(pred: Any, gold: Any, *, rel_tol: float = 1e-6) -> bool | None:
    """Numeric equivalence; None when the gold does not parse, False when the prediction does not.

    Equal when |p − g| ≤ rel_tol · max(|p|, |g|) in exact rational arithmetic (`math.isclose` with abs_tol 0,
    without float overflow). With rel_tol 1e-6, "0.3333333" matches 1/3 but "0.333" does not; 0 matches only an
    exact 0. A percentage matches either reading: "50%" equals both 0.5 and 50 (the question may ask "what
    percent"). [our reading; mathruler's `grade_answer` and math_verify are symbolic: stricter about forms, looser
    about expressions]
    """
    g = _parse_number_percent(gold)
    if g is None:
        return None
    p = _parse_number_percent(pred)
    if p is None:
        return False
    tol = Fraction(rel_tol)
    for a in _candidates(p):
        for b in _candidates(g):
            if abs(a - b) <= tol * max(abs(a), abs(b)):  # math.isclose(rel_tol, abs_tol=0) in exact arithmetic
                return True
    return False


@register_reward("numeric")
def numeric_reward(
    completion: str, target: Any, *, boxed_fallback: bool = False, rel_tol: float = 1e-6, **info: Any
) -> float | None:
    """Math accuracy: 1.0 iff the answer is numerically equal to the gold (`numbers_equal`), 0.0 otherwise; None
    when the target is None or does not parse as a number (TRL's skip of unparseable golds).

    Stands in for math_verify parse + verify (TRL, R1-V) and mathruler `grade_answer` (EasyR1, verl geo3k) on
    numeric answers only; see `parse_number` for what is not covered. The answer is the `<answer>` content (or the
    last `\\boxed{}` with `boxed_fallback`, EasyR1's math format); the whole answer must be the number.
    """
    if target is None:
        return None
    if not rel_tol >= 0:
        raise ValueError(f"numeric: rel_tol must be >= 0, got {rel_tol!r}")
    answer = extract_answer(_check_text(completion), boxed_fallback=boxed_fallback)
    same = numbers_equal(answer if answer is not None else "", target, rel_tol=rel_tol)
    return None if same is None else float(same)


# ---------------------------------------------------------------------------------------------------------- counting
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
_COUNT_NUM_RE = re.compile(r"(?<![\d.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\d])")
_COUNT_WORD_RE = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


def _single_count(text: str, words: bool) -> int | None:
    """The one integer in `text` (digits, or number words zero–twenty when `words`); None if none, several, or not
    integral (3.5)."""
    values = [parse_number(tok) for tok in _COUNT_NUM_RE.findall(text)]
    if words:
        values += [Fraction(_NUMBER_WORDS[w.lower()]) for w in _COUNT_WORD_RE.findall(text)]
    if len(values) != 1 or values[0] is None or values[0].denominator != 1:
        return None
    return int(values[0])


@register_reward("count")
def count_reward(
    completion: str, target: Any, *, words: bool = True, boxed_fallback: bool = False, **info: Any
) -> float | None:
    """Counting (CLEVR / SuperCLEVR): 1.0 iff the answer holds exactly one integer and it equals the gold count.

    The gold: an int, or a string that is one integer ("3", "1,000") or one number word ("three"); anything else
    raises. R1-V compares the `<answer>` content with the gold number [authors' code: R1-V]. Ours: the answer may
    wrap the number in words ("There are 3 cubes."); digits with thousands groups and integral decimals ("3.0") count;
    `words=True` (default) also reads number words zero–twenty ("three"); two or more numbers ("3 or 4", "one of
    the three") or a non-integer ("3.5") give 0; a sign is kept, so "-3" never matches a count.
    """
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise ValueError(f"count: target must be an int or a string holding one, got {target!r}")
    if isinstance(target, int):
        gold = target
    else:
        value = parse_number(target)
        word = _NUMBER_WORDS.get(normalize_text(target))
        gold = int(value) if value is not None and value.denominator == 1 else word
    if gold is None:
        raise ValueError(f"count: target {target!r} is not an integer (digits or a number word zero–twenty)")
    answer = extract_answer(_check_text(completion), boxed_fallback=boxed_fallback)
    return float(answer is not None and _single_count(answer, words) == gold)


# ---------------------------------------------------------------------------------------------------- multiple choice
_MC_CUE_RE = re.compile(r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:\-]?\s*\(?([A-Z])\)?(?![A-Za-z0-9])")
_MC_STANDALONE_RE = re.compile(r"(?<![A-Za-z0-9])\(?([A-Z])\)?(?![A-Za-z0-9])")
_MC_ALONE_RE = re.compile(r"\(?\s*([A-Za-z])\s*\)?\s*[.:)]?")


def extract_choice(text: str, choices: str = "ABCDEFGH") -> str | None:
    """The one option letter in `text`, or None (none found, or a tie between several letters).

    Rules, first that applies decides: (1) the whole text is one letter, any case, optionally "(b)", "B.", "B:",
    "B)"; (2) letters after a cue "answer", "option", "choice" (optionally "is", ":"), e.g. "the answer is (B)";
    (3) stand-alone capital letters ("B. delta", "I pick B"). Only letters in `choices` count; in rules 2–3 only
    capitals (a lone "a" is an article). Several distinct letters in the deciding rule ("B or C", "A) x, B) y") → None.
    Default `choices` stops at H: "I" is usually the pronoun. [our reading; VLM-R1 and EasyR1 compare the answer
    string or use math graders, not letter extraction]
    """
    text = text.strip()
    m = _MC_ALONE_RE.fullmatch(text)
    if m:
        letter = m.group(1).upper()
        return letter if letter in choices else None
    for rx in (_MC_CUE_RE, _MC_STANDALONE_RE):
        found = {x for x in rx.findall(text) if x in choices}
        if found:
            return found.pop() if len(found) == 1 else None
    return None


@register_reward("multiple_choice")
def multiple_choice_reward(
    completion: str, target: Any, *, choices: str = "ABCDEFGH", boxed_fallback: bool = False, **info: Any
) -> float | None:
    """MCQ / yes-no as letters: 1.0 iff `extract_choice(answer)` equals the gold letter; ties and no letter → 0.

    `choices` (a setting or a per-sample info key) lists the offered letters, e.g. "ABCD". The gold ("B", "(B)")
    goes through the same extraction.
    """
    if target is None:
        return None
    gold = extract_choice(str(target), choices) if isinstance(target, str) else None
    if gold is None:
        raise ValueError(f"multiple_choice: target {target!r} is not one option letter of {choices!r}")
    answer = extract_answer(_check_text(completion), boxed_fallback=boxed_fallback)
    return float(answer is not None and extract_choice(answer, choices) == gold)


# -------------------------------------------------------------------------------------------------------------- boxes
_BRACKET_RE = re.compile(r"\[([^\[\]]*)\]")


def _valid_box(box: Sequence[float]) -> bool:
    return len(box) == 4 and all(math.isfinite(v) for v in box) and box[2] >= box[0] and box[3] >= box[1]


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first bracketed list with no brackets inside (`[x1, y1, x2, y2]`, also inside VLM-R1's JSON
    `[{"bbox_2d": [..], …}]`), as 4 floats; None for wrong arity, a non-number, NaN/inf, x2 < x1 or y2 < y1."""
    m = _BRACKET_RE.search(text)
    if m is None:
        return None
    parts = [p.strip() for p in m.group(1).split(",")]
    if len(parts) != 4 or not all(_DECIMAL_RE.fullmatch(p) for p in parts):
        return None
    box = tuple(float(p) for p in parts)
    return box if _valid_box(box) else None  # type: ignore[return-value]


def rescale_box(box: Sequence[float], input_size: Sequence[float], image_size: Sequence[float]) -> tuple[float, ...]:
    """Box from the model's input resolution to the original image: x · W/w_in, y · H/h_in.

    Both sizes are (width, height), as PIL's `Image.size`. `input_size` is what the processor fed the model (Qwen2-VL:
    grid × 14 px; VLM-R1 reads it from `image_grid_thw`); for Qwen2-VL's 0–1000 relative coordinates pass (1000, 1000).
    """
    (w_in, h_in), (w, h) = input_size, image_size
    if not (w_in > 0 and h_in > 0 and w > 0 and h > 0):
        raise ValueError(
            f"sizes must be positive (width, height), got input_size={input_size}, image_size={image_size}"
        )
    sx, sy = w / w_in, h / h_in
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes in continuous coordinates (area = (x2 − x1)(y2 − y1)); 0 when the union is
    empty. VLM-R1's `iou` mixes an inclusive-pixel intersection (−1/+1) with a continuous union; we use one
    convention throughout. [our reading]"""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _gold_box(target: Any) -> tuple[float, ...]:
    box = parse_box(target) if isinstance(target, str) else None
    if box is None and isinstance(target, (list, tuple)) and len(target) == 4:
        try:
            box = tuple(float(v) for v in target)
        except (TypeError, ValueError):
            box = None
    if box is None or not _valid_box(box):
        raise ValueError(f"iou: target must be a box [x1, y1, x2, y2] with x2 >= x1, y2 >= y1, got {target!r}")
    return box


def _iou_value(completion: str, target: Any, boxed_fallback: bool, info: Mapping[str, Any]) -> float | None:
    if target is None:
        return None
    gold = _gold_box(target)
    input_size, image_size = info.get("input_size"), info.get("image_size")
    if (input_size is None) != (image_size is None):
        raise ValueError("iou: give both info['input_size'] and info['image_size'] (width, height), or neither")
    answer = extract_answer(_check_text(completion), boxed_fallback=boxed_fallback)
    box = parse_box(answer) if answer is not None else None
    if box is None:
        return 0.0
    if input_size is not None:
        box = rescale_box(box, input_size, image_size)
    return box_iou(box, gold)


@register_reward("iou")
def iou_reward(completion: str, target: Any, *, boxed_fallback: bool = False, **info: Any) -> float | None:
    """Grounding / REC (VLM-R1): IoU in [0, 1] of the first `[x1, y1, x2, y2]` in the answer with the gold box.

    The predicted box is rescaled from `info["input_size"]` to `info["image_size"]` (both (width, height); without
    both, no rescale); the gold is in original-image pixels. No answer, no box, wrong arity, a non-number, NaN or
    x2 < x1 / y2 < y1 → 0. Boxes are not clipped to the image. [authors' code: VLM-R1 `iou_reward`]
    """
    return _iou_value(completion, target, boxed_fallback, info)


@register_reward("iou_threshold")
def iou_threshold_reward(
    completion: str, target: Any, *, threshold: float = 0.5, boxed_fallback: bool = False, **info: Any
) -> float | None:
    """1.0 iff `iou` > threshold (strict; 0.5 is VLM-R1's binary variant and Visual-RFT's match rule), else 0.0."""
    if not 0 <= threshold < 1:
        raise ValueError(f"iou_threshold: threshold must be in [0, 1), got {threshold!r}")
    value = _iou_value(completion, target, boxed_fallback, info)
    return None if value is None else float(value > threshold)


# --------------------------------------------------------------------------------------------- length and repetition
@register_reward("soft_overlong")
def soft_overlong_reward(
    completion: str, target: Any = None, *, max_len: int, cache_len: int, **info: Any
) -> float:
    """DAPO's soft overlong punishment (DAPO Eq. 13; card §2), n = `info["num_tokens"]` (completion tokens):

        R = 0                              if n ≤ L_max − L_c
        R = ((L_max − L_c) − n) / L_c      if L_max − L_c < n ≤ L_max      (0 → −1 linearly; −1 at n = L_max)
        R = −1                             if n > L_max

    L_max = `max_len`, L_c = `cache_len` (0 < L_c ≤ L_max). [authors' code: TRL `get_soft_overlong_punishment`,
    verl `overlong_buffer`, EasyR1 `dapo.py`] DAPO used L_max 20480, L_c 4096.
    """
    if not (isinstance(max_len, int) and isinstance(cache_len, int) and 0 < cache_len <= max_len):
        raise ValueError(f"soft_overlong: need integers 0 < cache_len <= max_len, got {cache_len=}, {max_len=}")
    n = info.get("num_tokens")
    if n is None or isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"soft_overlong needs info['num_tokens'] (completion tokens, int >= 0), got {n!r}")
    start = max_len - cache_len
    if n <= start:
        return 0.0
    if n <= max_len:
        return (start - n) / cache_len
    return -1.0


@register_reward("repetition")
def repetition_reward(
    completion: str,
    target: Any = None,
    *,
    ngram_size: int = 3,
    max_penalty: float = -1.0,
    unit: str = "words",
    **info: Any,
) -> float:
    """n-gram repetition penalty (Yeo et al. 2025, "Demystifying Long CoT", App. C.2):

        R = (1 − #unique n-grams / #n-grams) · max_penalty   ∈ [max_penalty, 0];   0 with fewer than n units

    `unit="words"`: lower-cased whitespace words of the completion (open-r1 `get_repetition_penalty_reward`, the
    version VLM-R1-style recipes use); `unit="tokens"`: `info["completion_ids"]` (TRL 1.16 `trl/rewards/
    other_rewards.py`, tokenizer-defined). Defaults n = 3, max_penalty = −1 as both. max_penalty must be ≤ 0.
    """
    if max_penalty > 0:
        raise ValueError(f"repetition: max_penalty must be <= 0, got {max_penalty!r}")
    if not (isinstance(ngram_size, int) and ngram_size >= 1):
        raise ValueError(f"repetition: ngram_size must be an int >= 1, got {ngram_size!r}")
    if unit == "words":
        units = _check_text(completion).lower().split()
    elif unit == "tokens":
        ids = info.get("completion_ids")
        if ids is None:
            raise ValueError("repetition(unit='tokens') needs info['completion_ids'] (the completion's token ids)")
        units = [int(t) for t in ids]
    else:
        raise ValueError(f"repetition: unit must be 'words' or 'tokens', got {unit!r}")
    if len(units) < ngram_size:
        return 0.0
    ngrams = list(zip(*(units[i:] for i in range(ngram_size))))
    scaling = 1.0 - len(set(ngrams)) / len(ngrams)
    return scaling * max_penalty if scaling else 0.0


# ------------------------------------------------------------------------------------------------------- combination
def _keyword_params(fn: RewardFn) -> tuple[set[str], set[str]]:
    """(all keyword-only settings, those without a default)."""
    params = inspect.signature(fn).parameters.values()
    kw = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return {p.name for p in kw}, {p.name for p in kw if p.default is inspect.Parameter.empty}


class CombinedReward:
    """Weighted sum of registered rewards with every component kept for logging (card §3 "Combination").

        total_i = Σ_{k : r_k(i) is not None} w_k · r_k(i)

    - A None component (skip) contributes nothing to the total and is logged as NaN: TRL's
      `(rewards_per_func * weights).nansum(dim=1)` [authors' code: TRL 1.16 `GRPOTrainer`]. Weights are not
      renormalised over the present components.
    - A sample for which *every* component is None is unscorable: its total is `unscorable_value` (default NaN, as
      TRL 1.16, which then excludes it from the group baseline and gives it advantage 0; the trainer must do the
      same) and a warning names the sample indices.
    - Weight 0 keeps a reward logged but out of the total. EasyR1's (1 − w)·accuracy + w·format is
      `{"numeric": 1 − w, "format": w}`; R1-V/VLM-R1/TRL sum with weight 1 each, so totals may exceed 1.

    `weights`: {reward name: finite weight} (the config field `reward.weights`); `kwargs`: {reward name: settings}
    (`reward.kwargs`), checked against each function's keyword-only parameters at construction. A per-sample info key
    that repeats a setting is an error (which one wins would be a silent choice).
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        unscorable_value: float = math.nan,
    ):
        if not weights:
            raise ConfigError(
                f"reward.weights is empty; give {{reward name: weight}} from: {', '.join(available_rewards())}"
            )
        kwargs = dict(kwargs or {})
        self.fns: dict[str, RewardFn] = {}
        self.weights: dict[str, float] = {}
        for name, w in weights.items():
            if name not in _REGISTRY:
                raise ConfigError(
                    f"reward.weights: unknown reward {name!r}; available rewards: {', '.join(available_rewards())}"
                )
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ConfigError(f"reward.weights[{name!r}]={w!r}: expected a finite number")
            self.fns[name], self.weights[name] = _REGISTRY[name], float(w)
        for name in kwargs:
            if name not in self.weights:
                raise ConfigError(f"reward.kwargs[{name!r}]: {name!r} has settings but no weight in reward.weights")
        self.kwargs: dict[str, dict[str, Any]] = {}
        for name, fn in self.fns.items():
            given = dict(kwargs.get(name, {}))
            allowed, required = _keyword_params(fn)
            unknown, missing = set(given) - allowed, required - set(given)
            if unknown:
                raise ConfigError(
                    f"reward.kwargs[{name!r}]: unknown setting(s) {sorted(unknown)}; {name} takes {sorted(allowed)}"
                )
            if missing:
                raise ConfigError(f"reward.kwargs[{name!r}]: missing required setting(s) {sorted(missing)}")
            self.kwargs[name] = given
        self.unscorable_value = float(unscorable_value)

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    def __call__(
        self,
        completions: Sequence[str],
        targets: Sequence[Any],
        infos: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[list[float], dict[str, list[float]]]:
        """(totals, {name: per-completion values, NaN where skipped}), one entry per completion."""
        n = len(completions)
        infos = [{} for _ in range(n)] if infos is None else infos
        if len(targets) != n or len(infos) != n:
            raise ValueError(f"got {n} completions, {len(targets)} targets and {len(infos)} infos; lengths must match")
        components: dict[str, list[float]] = {name: [] for name in self.fns}
        totals: list[float] = []
        unscorable: list[int] = []
        for i, (completion, target, info) in enumerate(zip(completions, targets, infos)):
            total, scored = 0.0, False
            for name, fn in self.fns.items():
                clash = set(info) & set(self.kwargs[name])
                if clash:
                    raise ValueError(f"sample {i}: info key(s) {sorted(clash)} repeat reward.kwargs[{name!r}]")
                value = fn(completion, target, **self.kwargs[name], **info)
                if value is None:
                    components[name].append(math.nan)
                    continue
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"reward {name!r} returned {value} for sample {i}; return None to skip")
                components[name].append(value)
                total += self.weights[name] * value
                scored = True
            if not scored:
                unscorable.append(i)
            totals.append(total if scored else self.unscorable_value)
        if unscorable:
            warnings.warn(
                f"CombinedReward: every reward returned None for sample(s) {unscorable}; "
                f"total set to {self.unscorable_value}",
                stacklevel=2,
            )
        return totals, components
