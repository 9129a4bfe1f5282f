"""Exact verifier: is this image correct for this prompt? (shared_core.md §11)

`verify(image, prompt_or_record)` finds objects from pixels alone (`detect.detect_objects`) and applies GenEval's
rules [authors' code: `djghosh13/geneval` `evaluation/evaluate_images.py`, `evaluate` and `relative_position`],
re-implemented on our detections:

- include entry {class, count}: at least `count` objects of that shape must exist ("at least", as GenEval: its
  `found_objects = objects[class][:count]` only fails when fewer are found). Extra objects of other shapes are allowed.
- `color`: at least `count` objects of that shape have that colour. GenEval colour-classifies its `count` most
  confident detections of the class; a pixel verifier has no confidence, so we read it existentially (any `count`
  objects of the class with the colour; the largest such ones are "found"). [our reading]
- `position` [relation, ref]: checked only if the entry matched; every found object must stand in `relation` to every
  found object of entry `ref` (which must have matched). Relation of A to B, GenEval's rule with its threshold 0.1:
      offset = c_A − c_B,   revised = sign(offset) · max(|offset| − 0.1 · (dims_A + dims_B), 0)
      no relation if |revised| < 1e-3 on both axes; else (dx, dy) = revised / |offset|;
      dx < −0.5 → "left of", dx > 0.5 → "right of", dy < −0.5 → "above", dy > 0.5 → "below" (y down),
  with c = area centroid (GenEval: box centre) and dims = box width/height. [our reading: centroid]
- exclude entry {class, count}: fails if `count` or more objects of that shape exist (counting prompts: exactly n).

A prompt is correct only if every condition holds. Objects are largest-first ("most confident first"); unknown
shapes never count. `details["score"]` = fraction of satisfied conditions (one per include count, colour and position,
one per exclude; conditions after a failed count are unsatisfied): the partial-credit reward. `details["graded_score"]`
is the same mean with an include count credited min(found, count)/count instead of 0/1, so that three circles for
"four circles" earn more than one (the plain partial credit gives both the exclude's half, which teaches a policy
to under-draw). [our reading]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.shapes.detect import detect_objects, to_uint8_hwc
from shared.shapes.prompts import as_record
from shared.shapes.vocab import COLOR_NAMES

POSITION_THRESHOLD = 0.1  # GenEval's default `position_threshold`


@dataclass
class VerifyResult:
    """`correct`: every condition holds; `reason`: GenEval-style failure lines ("" when correct); `tag`: the record's
    tag; `details`: detected objects, per-condition outcomes and the partial-credit `score`."""

    correct: bool
    reason: str
    tag: str
    details: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(self.details.get("score", float(self.correct)))


def relations(
    center_a: Sequence[float],
    dims_a: Sequence[float],
    center_b: Sequence[float],
    dims_b: Sequence[float],
    threshold: float = POSITION_THRESHOLD,
) -> set[str]:
    """Relations of A to B (subset of RELATIONS) by GenEval's margin rule (module doc)."""
    off = (center_a[0] - center_b[0], center_a[1] - center_b[1])
    norm = math.hypot(*off)
    if norm == 0.0:
        return set()
    rev = [
        math.copysign(max(abs(o) - threshold * (da + db), 0.0), o)
        for o, da, db in zip(off, (dims_a[0], dims_a[1]), (dims_b[0], dims_b[1]))
    ]
    if abs(rev[0]) < 1e-3 and abs(rev[1]) < 1e-3:
        return set()
    dx, dy = rev[0] / norm, rev[1] / norm
    out = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return out


def check(objects: Sequence, record: dict, *, position_threshold: float = POSITION_THRESHOLD) -> VerifyResult:
    """GenEval's decision on already-detected objects (`detect.DetectedObject`s, any order)."""
    objs = sorted((o for o in objects if o.shape != "unknown"), key=lambda o: -o.area)
    by_class: dict[str, list] = {}
    for o in objs:
        by_class.setdefault(o.shape, []).append(o)
    reasons: list[str] = []
    conditions: list[dict] = []
    matched_groups: list[list | None] = []

    def cond(kind: str, where: str, ok: bool, credit: float | None = None) -> None:
        conditions.append({"check": kind, "entry": where, "satisfied": bool(ok),
                           "credit": float(ok) if credit is None else float(credit)})

    for i, req in enumerate(record["include"]):
        cls, n = req["class"], req["count"]
        where = f"include[{i}]"
        have = by_class.get(cls, [])
        matched = len(have) >= n
        cond("count", where, matched, credit=min(len(have), n) / n)
        found = have[:n]
        if not matched:
            reasons.append(f"expected {cls}>={n}, found {len(have)}")
        if "color" in req:
            want = req["color"]
            with_color = [o for o in have if o.color == want]
            ok = matched and len(with_color) >= n
            cond("color", where, ok)
            if matched and not ok:
                seen = [o.color for o in have]
                reasons.append(
                    f"expected {want} {cls}>={n}, found {len(with_color)} {want}; and "
                    + ", ".join(f"{seen.count(c)} {c}" for c in COLOR_NAMES if c in seen)
                )
            matched = ok
            found = with_color[:n]
        if "position" in req:
            rel, ref = req["position"]
            ok = matched
            if matched:
                target = matched_groups[ref] if ref < len(matched_groups) else None
                if target is None:
                    ok = False
                    reasons.append(f"no target for {cls} to be {rel}")
                else:
                    for a in found:
                        for b in target:
                            true_rels = relations(a.centroid, a.dims, b.centroid, b.dims, position_threshold)
                            if rel not in true_rels:
                                ok = False
                                found_rels = " and ".join(sorted(true_rels)) or "no relation to"
                                reasons.append(f"expected {cls} {rel} target, found {found_rels} target")
                                break
                        if not ok:
                            break
            cond("position", where, ok)
            matched = ok
        matched_groups.append(found if matched else None)

    for i, req in enumerate(record.get("exclude", [])):
        cls, n = req["class"], req["count"]
        have = len(by_class.get(cls, []))
        cond("exclude", f"exclude[{i}]", have < n)
        if have >= n:
            reasons.append(f"expected {cls}<{n}, found {have}")

    satisfied = sum(c["satisfied"] for c in conditions)
    correct = satisfied == len(conditions)
    details = {
        "objects": [o.as_dict() for o in objects],
        "conditions": conditions,
        "score": satisfied / len(conditions) if conditions else 1.0,
        "graded_score": sum(c["credit"] for c in conditions) / len(conditions) if conditions else 1.0,
    }
    return VerifyResult(correct=correct, reason="\n".join(reasons), tag=record["tag"], details=details)


def verify(
    image,
    prompt_or_record: str | dict,
    *,
    position_threshold: float = POSITION_THRESHOLD,
    **detect_kwargs,
) -> VerifyResult:
    """Decide from pixels alone whether `image` shows `prompt_or_record` (module doc for the rules).

    `image`: PIL image, numpy HWC uint8 (or float in [0, 1]) or torch CHW float in [0, 1].
    `prompt_or_record`: prompt text in the shapes grammar (parsed) or a GenEval record over the shapes vocabulary.
    `detect_kwargs`: `tol`, `alpha_min`, `min_area_frac` of `detect.detect_objects`.
    """
    record = as_record(prompt_or_record)
    rgb = to_uint8_hwc(image)
    result = check(detect_objects(rgb, **detect_kwargs), record, position_threshold=position_threshold)
    result.details["image_size"] = [int(rgb.shape[0]), int(rgb.shape[1])]
    return result
