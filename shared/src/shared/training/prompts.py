"""Prompt files: ``.txt`` (one prompt per line) and ``.jsonl`` (GenEval ``evaluation_metadata.jsonl``-style records).

* ``.txt``: one prompt per line; blank lines and lines whose first non-space character is ``#`` are skipped;
  surrounding whitespace is stripped. Returns ``list[str]``.
* ``.jsonl``: one JSON object per line with at least a non-empty string ``"prompt"`` (GenEval records also carry
  ``tag``, ``include``, ``exclude``, which are kept as they are). Blank lines are skipped. Returns ``list[dict]``.

Any problem (missing file, a directory, another extension, not UTF-8, no prompts, bad JSON, a line that is not an
object, a missing / non-string / empty ``prompt``) raises :class:`~shared.errors.PromptFileError` naming the file, the
line and the fix. Call it before building models. The shapes module has its own stricter GenEval validator; this one
only checks what every trainer needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.errors import PromptFileError

__all__ = ["load_prompt_file", "load_prompts"]

_SUFFIXES = (".txt", ".jsonl")


def _err(path: Path, what: str, fix: str, line: int | None = None) -> PromptFileError:
    where = f"{path}, line {line}" if line is not None else str(path)
    return PromptFileError(f"prompt file {where}: {what}. Fix: {fix}.")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise _err(path, f"does not exist (cwd: {Path.cwd()})", "check the path in the config")
    if not path.is_file():
        raise _err(path, "is not a file", "point the config at a .txt or .jsonl file")
    if path.suffix.lower() not in _SUFFIXES:
        raise _err(path, f"has unsupported extension {path.suffix!r}",
                   "use .txt (one prompt per line) or .jsonl (one {\"prompt\": ...} object per line)")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise _err(path, f"is not UTF-8 text (invalid byte 0x{data[e.start]:02x})", "re-save the file as UTF-8",
                   line) from None


def load_prompt_file(path: str | Path) -> list[str] | list[dict[str, Any]]:
    """Prompts of a ``.txt`` file (``list[str]``) or records of a ``.jsonl`` file (``list[dict]``)."""
    path = Path(path)
    text = _read_text(path)
    if path.suffix.lower() == ".txt":
        prompts = [s for s in (raw.strip() for raw in text.splitlines()) if s and not s.startswith("#")]
        if not prompts:
            raise _err(path, "contains no prompts (only blank or # comment lines)" if text.strip() else "is empty",
                       "write one prompt per line")
        return prompts
    records: list[dict[str, Any]] = []
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            raise _err(path, f"is not valid JSON ({e.msg} at column {e.colno})",
                       'write one JSON object per line, e.g. {"prompt": "a photo of a cat"}', i) from None
        if not isinstance(rec, dict):
            raise _err(path, f"is a JSON {type(rec).__name__}, not an object",
                       'write one JSON object per line, e.g. {"prompt": "a photo of a cat"}', i)
        if "prompt" not in rec:
            raise _err(path, f"has no \"prompt\" key (keys: {', '.join(rec) or 'none'})",
                       'add a "prompt" string to every record', i)
        if not isinstance(rec["prompt"], str):
            raise _err(path, f"\"prompt\" is {type(rec['prompt']).__name__} {rec['prompt']!r}, not a string",
                       "make the prompt a JSON string", i)
        if not rec["prompt"].strip():
            raise _err(path, "\"prompt\" is empty", "give every record a non-empty prompt", i)
        records.append(rec)
    if not records:
        raise _err(path, "contains no records" if text.strip() else "is empty",
                   'write one JSON object per line, e.g. {"prompt": "a photo of a cat"}')
    return records


def load_prompts(path: str | Path) -> list[str]:
    """Just the prompt strings of a ``.txt`` or ``.jsonl`` prompt file."""
    items = load_prompt_file(path)
    return [r["prompt"] if isinstance(r, dict) else r for r in items]
