"""The shapes world: an offline stand-in for GenEval (shared_core.md §11).

Procedurally rendered coloured shapes with GenEval-format captions and an exact pixel verifier:

    records = eval_prompts()                    # fixed 96-prompt evaluation set (16 per tag)
    image = render(records[0], size=64, seed=0) # a correct PIL image
    verify(image, records[0]).correct           # True
    geneval_score(images, records)["overall"]   # mean of the six tag means

One job per module: `vocab` (closed vocabulary), `prompts` (records, generator, parser), `render` (ground truth),
`detect` (pixels → objects), `verify` (GenEval's rules), `score` (summaries), `geneval` (file formats),
`grid` (figures).
"""

from shared.shapes.detect import DetectedObject, detect_objects, to_uint8_hwc
from shared.shapes.geneval import evaluate_folder, read_metadata, read_samples, write_metadata, write_samples
from shared.shapes.grid import image_grid, render_grid
from shared.shapes.prompts import all_prompts, as_record, eval_prompts, generate_prompts, parse_prompt, validate_record
from shared.shapes.render import PlacedShape, layout, render, render_scene
from shared.shapes.score import geneval_score, summarize
from shared.shapes.verify import VerifyResult, relations, verify
from shared.shapes.vocab import COLOR_NAMES, COLORS, COUNT_WORDS, RELATIONS, SHAPES, TAGS

__all__ = [
    "COLORS",
    "COLOR_NAMES",
    "COUNT_WORDS",
    "RELATIONS",
    "SHAPES",
    "TAGS",
    "DetectedObject",
    "PlacedShape",
    "VerifyResult",
    "all_prompts",
    "as_record",
    "detect_objects",
    "eval_prompts",
    "evaluate_folder",
    "generate_prompts",
    "geneval_score",
    "image_grid",
    "layout",
    "parse_prompt",
    "read_metadata",
    "read_samples",
    "relations",
    "render",
    "render_grid",
    "render_scene",
    "summarize",
    "to_uint8_hwc",
    "validate_record",
    "verify",
    "write_metadata",
    "write_samples",
]
