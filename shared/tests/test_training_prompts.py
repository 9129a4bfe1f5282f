"""Prompt files: .txt and GenEval-style .jsonl, and their errors."""

from __future__ import annotations

import json

import pytest

from shared.errors import PromptFileError
from shared.training import load_prompt_file, load_prompts


def test_txt_skips_blank_and_comments(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("# header\n a photo of a cat \n\n   # indented comment\na red square\n", encoding="utf-8")
    assert load_prompt_file(p) == ["a photo of a cat", "a red square"]


def test_jsonl_geneval_records(tmp_path):
    recs = [{"tag": "counting", "include": [{"class": "circle", "count": 3}],
             "exclude": [{"class": "circle", "count": 4}], "prompt": "a photo of three circles"},
            {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}],
             "prompt": "a photo of a red square"}]
    p = tmp_path / "evaluation_metadata.jsonl"
    p.write_text("\ufeff" + "\n".join(json.dumps(r) for r in recs) + "\n\n", encoding="utf-8")  # BOM, trailing blank
    assert load_prompt_file(p) == recs
    assert load_prompts(p) == ["a photo of three circles", "a photo of a red square"]


@pytest.mark.parametrize("name, content, pattern", [
    ("missing.txt", None, r"missing\.txt: does not exist"),
    ("empty.txt", "", r"empty\.txt: is empty"),
    ("comments.txt", "# only\n\n", r"comments\.txt: contains no prompts"),
    ("empty.jsonl", "\n\n", r"empty\.jsonl: is empty"),
    ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c",,}\n', r"bad\.jsonl, line 3: is not valid JSON"),
    ("nokey.jsonl", '{"prompt": "a"}\n{"tag": "colors"}\n', r"nokey\.jsonl, line 2: has no \"prompt\" key"),
    ("nonstr.jsonl", '{"prompt": 3}\n', r"nonstr\.jsonl, line 1: \"prompt\" is int 3, not a string"),
    ("blank.jsonl", '{"prompt": "  "}\n', r"blank\.jsonl, line 1: \"prompt\" is empty"),
    ("list.jsonl", '["a photo"]\n', r"list\.jsonl, line 1: is a JSON list, not an object"),
    ("prompts.csv", "a,b\n", r"unsupported extension '\.csv'"),
])
def test_bad_prompt_files_name_file_line_and_fix(tmp_path, name, content, pattern):
    p = tmp_path / name
    if content is not None:
        p.write_text(content, encoding="utf-8")
    with pytest.raises(PromptFileError, match=pattern) as e:
        load_prompt_file(p)
    assert str(tmp_path) in str(e.value) and "Fix:" in str(e.value)


def test_non_utf8_names_line(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("a cat\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(PromptFileError, match=r"latin1\.txt, line 2: is not UTF-8 text \(invalid byte 0xe9\)"):
        load_prompt_file(p)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(PromptFileError, match="is not a file"):
        load_prompt_file(tmp_path)
