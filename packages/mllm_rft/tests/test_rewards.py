"""Rule-based rewards: hand-computed values on edge cases (mllm_rft.md §3)."""

import math
import warnings

import pytest

from mllm_rft import rewards as R
from mllm_rft.rewards import (
    CombinedReward,
    available_rewards,
    box_iou,
    extract_answer,
    extract_choice,
    get_reward,
    normalize_text,
    parse_box,
    parse_number,
    register_reward,
    rescale_box,
)
from shared.errors import ConfigError


def wrap(answer: str, think: str = "reasoning") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def score(name, completion, target=None, **info):
    return get_reward(name)(completion, target, **info)


# ------------------------------------------------------------------------------------------------------------- format
@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("  \n<think>multi\nline</think>\n\n<answer>\nb\n</answer>\n ", 1.0),  # DOTALL, surrounding whitespace
        ("<think></think><answer></answer>", 1.0),  # empty blocks still match the template
        ("<answer>b</answer>", 0.0),  # missing think
        ("<think>a</think>", 0.0),  # missing answer
        ("<think>a</think><answer>b", 0.0),  # unclosed answer (truncated)
        ("<think>a</think><answer>b</answer> trailing text", 0.0),  # text after </answer>
        ("preamble <think>a</think><answer>b</answer>", 0.0),  # text before <think>
        ("<think>a</think> interlude <answer>b</answer>", 0.0),  # text between the blocks
        ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
        ("<THINK>a</THINK><ANSWER>b</ANSWER>", 0.0),  # tags are case-sensitive
        ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0),  # duplicate answer (strict)
        ("<think>a<think>b</think><answer>c</answer>", 0.0),  # nested think (strict)
        ("<think>a</think><answer>x <think>y</think> z</answer>", 0.0),  # a tag inside the answer (strict)
    ],
)
def test_format(text, expected):
    assert score("format", text) == expected


def test_format_strict_flag_changes_duplicates_only():
    dup = "<think>a</think><answer>1</answer><answer>2</answer>"
    assert score("format", dup, strict=False) == 1.0  # the reference lazy regex lets it through
    assert score("format", dup, strict=True) == 0.0
    assert score("format", dup + " after", strict=False) == 0.0  # trailing text still fails
    assert score("format", "<think>a</think><answer>b</answer>", strict=False) == 1.0


def test_extract_answer():
    assert extract_answer(wrap(" 42 ")) == "42"
    assert extract_answer("<answer>1</answer> then <answer>2</answer>") == "2"  # the last block
    assert extract_answer("<answer>a<answer>b</answer>") == "b"  # nested: innermost last
    assert extract_answer("<answer>1</answer><answer>unclosed") == "1"  # the last *closed* block
    assert extract_answer("<answer>unclosed") is None
    assert extract_answer("no tags \\boxed{7}") is None
    assert extract_answer("no tags \\boxed{7} and \\boxed{\\frac{1}{2}}", boxed_fallback=True) == "\\frac{1}{2}"
    assert extract_answer("\\boxed{unclosed", boxed_fallback=True) is None
    assert extract_answer(wrap("3") + "\\boxed{9}", boxed_fallback=True) == "3"  # tags win over the fallback


# -------------------------------------------------------------------------------------------------------- exact match
def test_normalize_text_rules():
    assert normalize_text("  The   Cat.  ") == "cat"
    assert normalize_text("A") == "a"  # a lone letter is not an article
    assert normalize_text("an apple!?") == "apple"
    assert normalize_text("the the end") == "the end"  # one leading article only
    assert normalize_text("3.5") == "3.5" and normalize_text("cat, dog") == "cat, dog"
    assert normalize_text("Ｃａｔ") == "cat"  # NFKC full-width


@pytest.mark.parametrize(
    "answer, target, expected",
    [
        ("The Cat.", "cat", 1.0),
        ("A", "a", 1.0),
        ("a red cube", "red cube", 1.0),
        ("cat, dog", "cat dog", 0.0),
        ("dogs", "dog", 0.0),
        ("blue", ["red", "Blue"], 1.0),
    ],
)
def test_exact_match(answer, target, expected):
    assert score("exact_match", wrap(answer), target) == expected


def test_exact_match_missing_tags_none_target_and_bad_target():
    assert score("exact_match", "cat", "cat") == 0.0  # no answer block
    assert score("exact_match", wrap("cat"), None) is None
    with pytest.raises(ValueError, match="exact_match"):
        score("exact_match", wrap("cat"), 3)


def test_label():
    assert score("label", wrap("Great White Shark"), "great_white_shark") == 1.0
    assert score("label", wrap("F-16"), "f 16") == 1.0
    assert score("label", wrap("shark, whale"), "shark") == 0.0  # listing classes is not rewarded (no containment)
    assert score("label", wrap("shark"), "whale") == 0.0
    assert score("exact_match", wrap("great white shark"), "great_white_shark") == 0.0  # underscores: label only


# ------------------------------------------------------------------------------------------------------------ numeric
@pytest.mark.parametrize(
    "text, value",
    [
        ("1,000", 1000),
        ("12,345.5", 12345.5),
        ("0.50", 0.5),
        (".5", 0.5),
        ("-3", -3),
        ("\u22123", -3),  # U+2212 minus
        ("+7", 7),
        ("3/4", 0.75),
        ("-3/4", -0.75),
        ("\\frac{3}{4}", 0.75),
        ("\\dfrac{3}{4}", 0.75),
        ("-\\frac{1}{2}", -0.5),
        ("\\frac{-1}{2}", -0.5),
        ("\\frac34", 0.75),
        ("50%", 0.5),
        ("50\\%", 0.5),
        ("$\\boxed{12}$", 12),
        ("x = 5", 5),
        ("5.", 5),
        ("1e-3", 0.001),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == pytest.approx(value, rel=0, abs=0)


@pytest.mark.parametrize(
    "text", ["1,5", "1,0000", "\\sqrt{2}", "\\pi", "2+3", "1 1/2", "5 cm", "\\frac{1}{0}", "", "x"]
)
def test_parse_number_not_covered(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    "answer, target, expected",
    [
        ("1,000", 1000, 1.0),
        ("1000", "1,000", 1.0),
        ("0.50", "1/2", 1.0),
        ("\\frac{1}{2}", 0.5, 1.0),
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("-3", 3, 0.0),
        ("-3", "-3", 1.0),
        ("\u22123", -3, 1.0),
        ("50%", 0.5, 1.0),
        ("50%", 50, 1.0),  # a percentage matches either reading
        ("0.5", "50%", 1.0),
        ("0.3333333", "1/3", 1.0),  # within rel_tol 1e-6
        ("0.333", "1/3", 0.0),
        ("0", 0, 1.0),
        ("1e-12", 0, 0.0),  # no absolute tolerance
        ("1,5", 1.5, 0.0),  # decimal comma is not parsed
        ("x is 5", 5, 0.0),  # the whole answer must be the number
        ("7", 8, 0.0),
        ("1e400", "1e400", 1.0),  # exact arithmetic: no float overflow
        ("1e400", "2e400", 0.0),
        ("1e999999999", 1, 0.0),  # absurd exponents are not parsed
    ],
)
def test_numeric(answer, target, expected):
    assert score("numeric", wrap(answer), target) == expected


def test_numeric_skip_tolerance_and_fallback():
    assert score("numeric", wrap("1.41421"), "\\sqrt{2}") is None  # unparseable gold: skip (TRL)
    assert score("numeric", wrap("3"), None) is None
    assert score("numeric", "no tags", 3) == 0.0
    assert score("numeric", wrap("0.333"), "1/3", rel_tol=1e-2) == 1.0  # the tolerance setting acts
    boxed = "<think>so</think> the result is \\boxed{4}"
    assert score("numeric", boxed, 4) == 0.0
    assert score("numeric", boxed, 4, boxed_fallback=True) == 1.0


# -------------------------------------------------------------------------------------------------------------- count
@pytest.mark.parametrize(
    "answer, expected",
    [
        ("3", 1.0),
        (" 3. ", 1.0),
        ("There are 3 cubes.", 1.0),
        ("three", 1.0),
        ("Three", 1.0),
        ("3.0", 1.0),
        ("3.5", 0.0),
        ("3 or 4", 0.0),  # two numbers: ambiguous
        ("one of the three", 0.0),
        ("-3", 0.0),
        ("4", 0.0),
        ("", 0.0),
        ("several", 0.0),
    ],
)
def test_count(answer, expected):
    assert score("count", wrap(answer), 3) == expected


def test_count_words_flag_thousands_and_targets():
    assert score("count", wrap("three"), 3, words=False) == 0.0
    assert score("count", wrap("3"), 3, words=False) == 1.0
    assert score("count", wrap("1,000"), 1000) == 1.0
    assert score("count", wrap("5"), "5") == 1.0
    assert score("count", wrap("5"), "five") == 1.0
    assert score("count", wrap("5"), None) is None
    assert score("count", wrap("1,000"), "1,000") == 1.0
    for bad in ("many", "\\sqrt{2}", "2 or 3", "2.5"):
        with pytest.raises(ValueError, match="count"):
            score("count", wrap("2"), bad)
    with pytest.raises(ValueError, match="count"):
        score("count", wrap("1"), True)


# ---------------------------------------------------------------------------------------------------- multiple choice
@pytest.mark.parametrize(
    "answer, expected",
    [
        ("B", 1.0),
        ("(B)", 1.0),
        ("B.", 1.0),
        ("b", 1.0),
        ("B) delta", 1.0),
        ("B. Delta Air Lines", 1.0),
        ("the answer is B", 1.0),
        ("The answer is (B).", 1.0),
        ("Answer: B", 1.0),
        ("I choose B", 1.0),  # "I" is not an option letter by default
        ("C", 0.0),
        ("B or C", 0.0),  # tie
        ("A) apple, B) banana", 0.0),  # several options listed
        ("Blue", 0.0),  # no letter
        ("", 0.0),
    ],
)
def test_multiple_choice(answer, expected):
    assert score("multiple_choice", wrap(answer), "B") == expected


def test_multiple_choice_choices_and_targets():
    assert extract_choice("answer is C, not D") == "C"  # the cue decides before stand-alone letters
    assert extract_choice("E", "ABCD") is None
    assert score("multiple_choice", wrap("E"), "E") == 1.0
    assert score("multiple_choice", wrap("E"), "D", choices="ABCD") == 0.0
    assert score("multiple_choice", wrap("(A)"), "(a)") == 1.0
    assert score("multiple_choice", wrap("A"), None) is None
    with pytest.raises(ValueError, match="multiple_choice"):
        score("multiple_choice", wrap("E"), "E", choices="ABCD")


# -------------------------------------------------------------------------------------------------------------- boxes
def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty union


@pytest.mark.parametrize(
    "text",
    ["[20, 10, 10, 30]", "[10, 30, 20, 10]", "[1, 2, 3]", "[1, 2, 3, 4, 5]", "[nan, 1, 2, 3]", "[1, 2, inf, 4]",
     "[a, b, c, d]", "no box", "[]"],
)
def test_parse_box_malformed(text):
    assert parse_box(text) is None


def test_parse_box_forms():
    assert parse_box("[1, 2.5, 3, 4]") == (1.0, 2.5, 3.0, 4.0)
    assert parse_box('[{"bbox_2d": [5, 5, 15, 15], "label": "dog"}]') == (5.0, 5.0, 15.0, 15.0)
    assert parse_box("[0,0,10,10] then [5,5,15,15]") == (0.0, 0.0, 10.0, 10.0)  # the first


def test_iou_reward_values_and_malformed():
    gold = [0, 0, 10, 10]
    assert score("iou", wrap("[5, 5, 15, 15]"), gold) == pytest.approx(1 / 7)
    assert score("iou", wrap('[{"bbox_2d": [5, 5, 15, 15], "label": "dog"}]'), gold) == pytest.approx(1 / 7)
    assert score("iou", wrap("[0, 0, 10, 10] or [5, 5, 15, 15]"), gold) == 1.0
    assert score("iou", wrap("[0, 0, 10, 10]"), "[0, 0, 10, 10]") == 1.0
    for bad in ("[10, 0, 0, 10]", "[0, 0, 10]", "[nan, 0, 10, 10]", "box", ""):
        assert score("iou", wrap(bad), gold) == 0.0
    assert score("iou", "[0, 0, 10, 10]", gold) == 0.0  # no answer block
    assert score("iou", wrap("[0, 0, 10, 10]"), None) is None
    with pytest.raises(ValueError, match="iou"):
        score("iou", wrap("[0, 0, 10, 10]"), [10, 0, 0, 10])


def test_iou_rescaling_non_square():
    # model input 100 × 50 (w × h), original image 200 × 400: x · 2, y · 8
    assert rescale_box((10, 5, 20, 10), (100, 50), (200, 400)) == (20.0, 40.0, 40.0, 80.0)
    info = {"input_size": (100, 50), "image_size": (200, 400)}
    pred = wrap("[10, 5, 20, 10]")
    assert score("iou", pred, [20, 40, 40, 80], **info) == 1.0
    # gold [30, 40, 50, 80]: intersection 10 × 40 = 400, union 800 + 800 − 400 → 1/3
    assert score("iou", pred, [30, 40, 50, 80], **info) == pytest.approx(1 / 3)
    assert score("iou", pred, [20, 40, 40, 80]) == 0.0  # without rescaling the boxes do not meet
    swapped = {"input_size": (50, 100), "image_size": (400, 200)}  # (h, w) by mistake gives another value
    assert score("iou", pred, [20, 40, 40, 80], **swapped) != 1.0
    with pytest.raises(ValueError, match="input_size"):
        score("iou", pred, [20, 40, 40, 80], input_size=(100, 50))


def test_iou_threshold_is_strict():
    gold = [0, 0, 10, 10]
    assert score("iou_threshold", wrap("[5, 5, 15, 15]"), gold) == 0.0  # 1/7 ≤ 0.5
    assert score("iou_threshold", wrap("[5, 5, 15, 15]"), gold, threshold=0.1) == 1.0
    assert score("iou", wrap("[0, 0, 10, 5]"), gold) == 0.5
    assert score("iou_threshold", wrap("[0, 0, 10, 5]"), gold) == 0.0  # IoU == 0.5 is not > 0.5
    assert score("iou_threshold", wrap("[0, 0, 10, 6]"), gold) == 1.0


# ---------------------------------------------------------------------------------------------- length and repetition
@pytest.mark.parametrize(
    "n, expected",
    [(0, 0.0), (79, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (99, -0.95), (100, -1.0), (101, -1.0), (5000, -1.0)],
)
def test_soft_overlong_regimes_and_boundaries(n, expected):
    # L_max 100, L_c 20: 0 up to 80, then ((80 − n)/20), −1 beyond 100
    assert score("soft_overlong", "x", None, max_len=100, cache_len=20, num_tokens=n) == pytest.approx(expected)


def test_soft_overlong_errors():
    with pytest.raises(ValueError, match="num_tokens"):
        score("soft_overlong", "x", max_len=100, cache_len=20)
    with pytest.raises(ValueError, match="cache_len"):
        score("soft_overlong", "x", max_len=10, cache_len=20, num_tokens=1)


def test_repetition():
    # words a b c a b c, n = 3: abc bca cab abc → 4 n-grams, 3 unique → (1 − 3/4) · (−1)
    assert score("repetition", "a b c a b c") == pytest.approx(-0.25)
    assert score("repetition", "A b C a B c", max_penalty=-0.5) == pytest.approx(-0.125)  # lower-cased
    assert score("repetition", "one two three four") == 0.0
    assert score("repetition", "a a") == 0.0  # fewer words than n
    assert score("repetition", "a a a a a", ngram_size=2) == pytest.approx(-0.75)
    # tokens (TRL 1.16): ids 5 5 5 5 5, n = 2 → 4 bigrams, 1 unique → −0.75; the text is ignored
    assert score("repetition", "distinct words only", unit="tokens", ngram_size=2,
                 completion_ids=[5, 5, 5, 5, 5]) == pytest.approx(-0.75)
    with pytest.raises(ValueError, match="completion_ids"):
        score("repetition", "a", unit="tokens")
    with pytest.raises(ValueError, match="max_penalty"):
        score("repetition", "a", max_penalty=1.0)


# ---------------------------------------------------------------------------------------------------------- registry
def test_registry_lists_and_rejects():
    names = available_rewards()
    for name in ("format", "exact_match", "numeric", "count", "multiple_choice", "iou", "iou_threshold", "label",
                 "soft_overlong", "repetition"):
        assert name in names
    with pytest.raises(ConfigError, match="numeric"):
        get_reward("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("format")(lambda completion, target, **info: 0.0)


def test_register_new_reward_is_usable(monkeypatch):
    monkeypatch.setattr(R, "_REGISTRY", dict(R._REGISTRY))

    @register_reward("length_chars")
    def length_chars(completion, target, *, scale: float = 1.0, **info):
        return scale * len(completion)

    totals, comps = CombinedReward({"length_chars": 2.0}, {"length_chars": {"scale": 0.5}})(["abcd"], [None])
    assert totals == [4.0] and comps == {"length_chars": [2.0]}


# ------------------------------------------------------------------------------------------------------- combination
def test_combined_weighted_sum_and_components():
    combo = CombinedReward({"numeric": 0.9, "format": 0.1})
    completions = [wrap("5"), "5", wrap("4"), "<answer>5</answer>"]
    totals, comps = combo(completions, [5, 5, 5, 5])
    assert comps == {"numeric": [1.0, 0.0, 0.0, 1.0], "format": [1.0, 0.0, 1.0, 0.0]}
    assert totals == pytest.approx([1.0, 0.0, 0.1, 0.9])


def test_combined_kwargs_infos_and_zero_weight():
    combo = CombinedReward(
        {"iou": 1.0, "format": 1.0, "soft_overlong": 1.0, "repetition": 0.0},
        {"soft_overlong": {"max_len": 100, "cache_len": 20}},
    )
    infos = [
        {"num_tokens": 90, "input_size": (100, 50), "image_size": (200, 400)},
        {"num_tokens": 10, "input_size": (100, 50), "image_size": (200, 400)},
    ]
    completions = [wrap("[10, 5, 20, 10]"), wrap("[10, 5, 20, 10]") + " junk junk junk junk"]
    totals, comps = combo(completions, [[20, 40, 40, 80], [30, 40, 50, 80]], infos)
    assert comps["iou"] == pytest.approx([1.0, 1 / 3])
    assert comps["format"] == [1.0, 0.0]
    assert comps["soft_overlong"] == pytest.approx([-0.5, 0.0])
    assert comps["repetition"][0] == 0.0 and comps["repetition"][1] < 0  # logged ...
    assert totals == pytest.approx([1.0 + 1.0 - 0.5, 1 / 3])  # ... but weight 0 keeps it out of the total


def test_combined_skips_none_and_unscorable():
    combo = CombinedReward({"numeric": 1.0, "count": 2.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        totals, comps = combo([wrap("3")], ["3"])
    assert totals == [3.0]
    with pytest.warns(UserWarning, match="every reward returned None"):
        totals, comps = combo([wrap("3"), wrap("3")], [None, "3"])
    assert math.isnan(totals[0]) and totals[1] == 3.0  # every component None: unscorable (TRL 1.16)
    assert math.isnan(comps["numeric"][0]) and math.isnan(comps["count"][0])
    with pytest.raises(ValueError, match="count"):
        combo([wrap("3")], ["\\sqrt{2}"])  # numeric would skip this gold; count rejects it
    combo_n = CombinedReward({"numeric": 1.0, "format": 0.5})
    totals, comps = combo_n([wrap("3")], [None])
    assert totals == [0.5] and math.isnan(comps["numeric"][0])  # a None term contributes nothing
    with pytest.warns(UserWarning, match=r"sample\(s\) \[0\]"):
        totals, _ = CombinedReward({"numeric": 1.0}, unscorable_value=0.0)([wrap("3")], [None])
    assert totals == [0.0]


def test_combined_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"reward\.weights.*'nope'.*exact_match.*numeric"):
        CombinedReward({"nope": 1.0})
    with pytest.raises(ConfigError, match=r"reward\.weights"):
        CombinedReward({})
    with pytest.raises(ConfigError, match=r"reward\.weights\['format'\]"):
        CombinedReward({"format": float("nan")})
    with pytest.raises(ConfigError, match=r"reward\.kwargs\['numeric'\].*rel_tl"):
        CombinedReward({"numeric": 1.0}, {"numeric": {"rel_tl": 1e-3}})
    with pytest.raises(ConfigError, match=r"reward\.kwargs\['soft_overlong'\].*cache_len"):
        CombinedReward({"soft_overlong": 1.0}, {"soft_overlong": {"max_len": 100}})
    with pytest.raises(ConfigError, match=r"reward\.kwargs\['count'\].*no weight"):
        CombinedReward({"numeric": 1.0}, {"count": {"words": False}})


def test_combined_call_errors():
    combo = CombinedReward({"multiple_choice": 1.0}, {"multiple_choice": {"choices": "ABCD"}})
    with pytest.raises(ValueError, match="lengths must match"):
        combo([wrap("A")], ["A", "B"])
    with pytest.raises(ValueError, match="choices"):
        combo([wrap("A")], ["A"], [{"choices": "AB"}])  # info repeating a setting is ambiguous
    assert combo([wrap("A")], ["A"], [{"unrelated": 1}])[0] == [1.0]
