"""Atomic, verified checkpoints and RNG capture, for resume that continues the same run.

Layout of ``save_checkpoint(ckpt_dir, step, state)``::

    ckpt_dir/checkpoint-00000120/
        model.safetensors      # a state entry that is a flat {str: Tensor} dict (model / LoRA / EMA weights)
        optimizer.pt           # any other entry (optimizer, scheduler, RNG, counters, config) via torch.save
        manifest.json          # written last: step, and per file its state key, kind, size and sha256

Each top-level key of ``state`` becomes one file named after the key. The directory is assembled under a temporary
name beside the target (``.tmp-checkpoint-…``), every file is fsynced, the manifest is written last, and the directory
is renamed into place with ``os.replace``; a crash leaves either the previous checkpoints or a stale temp directory
(removed by the next save), never a half-written ``checkpoint-N``.

:func:`load_checkpoint` verifies the manifest (every file present, size and sha256 equal) before deserialising
anything and raises :class:`~shared.errors.CheckpointError` naming the path and what is wrong. It loads with
``torch.load(weights_only=True)``: store plain Python values and tensors (``to_dict(cfg)``, not the config object).

Recommended trainer state (keys are free-form; these are the ones the shared trainers use)::

    state = {
        "model": accelerator.unwrap_model(model).state_dict(),   # or only the LoRA weights
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict(),
        "faults": guard.state_dict(),
        "rng": capture_rng_state(),
        "trainer": {"step": step, "epoch": epoch, "samples_seen": n},
        "config": to_dict(cfg),
    }
    if accelerator.is_main_process:
        save_checkpoint(run_dir / "checkpoints", step, state, keep_last=3)
    accelerator.wait_for_everyone()

Resume: ``ckpt = latest_checkpoint(run_dir / "checkpoints")``; ``state = load_checkpoint(ckpt)`` *before* building
models (fails fast); build model/optimizer/scheduler as for a fresh run; ``load_state_dict`` each; call
``restore_rng_state(state["rng"])`` last, right before the loop continues at ``state["step"] + 1``. Under FSDP collect
the full state dict with ``accelerator.get_state_dict(model)``. With several processes the RNG captured is the
main process's; other ranks' streams are not restored (bitwise resume is guaranteed for single-process runs).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.errors import CheckpointError

__all__ = [
    "MANIFEST",
    "capture_rng_state",
    "checkpoint_step",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
]

MANIFEST = "manifest.json"
_FORMAT = "shared.checkpoint/1"
_PREFIX = "checkpoint-"
_NAME_RE = re.compile(r"^checkpoint-(\d+)$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------------------------
# RNG


def capture_rng_state() -> dict[str, Any]:
    """Python ``random``, NumPy's global generator, torch CPU and (when initialised) CUDA generator states.

    The result holds only tuples, ints, floats, strings and tensors, so it survives ``torch.load(weights_only=True)``.
    NumPy ``Generator`` objects (``np.random.default_rng``) are not global: store their ``bit_generator.state``
    yourself.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA only when present in both the state and this process)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np.asarray(np_state["keys"].numpy(), dtype=np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------------------------
# helpers


def _is_flat_tensor_dict(value: Any) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def _for_safetensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached; tensors sharing storage (tied weights) are cloned so safetensors accepts them."""
    out, seen = {}, set()
    for k, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = t
    return out


def _hash_and_fsync(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        os.fsync(fh.fileno())
    return h.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoint_step(path: str | Path) -> int | None:
    """The step encoded in a ``checkpoint-N`` directory name, else None."""
    m = _NAME_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` directories in ``ckpt_dir``, sorted by step (empty if the directory does not exist)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The highest-step ``checkpoint-N`` in ``ckpt_dir`` or None. It is not verified here: load it to verify."""
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------------------------------
# save


def save_checkpoint(ckpt_dir: str | Path, step: int, state: Mapping[str, Any], *, keep_last: int | None = 3) -> Path:
    """Write ``state`` atomically to ``ckpt_dir/checkpoint-<step>`` and return that path.

    Flat ``{str: Tensor}`` entries go to ``<key>.safetensors``, everything else to ``<key>.pt``; ``manifest.json``
    (step, files, sizes, sha256) is written last. An existing checkpoint of the same step is replaced. Checkpoints with
    a *larger* step are deleted: they belong to a run branch abandoned by resuming from an earlier checkpoint (the
    metrics log is truncated the same way). Then only the ``keep_last`` newest are kept (None keeps all).

    Call it on the main process only. ``state`` may contain ``"step"`` only if it equals ``step``.
    """
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"keep_last must be None or an int >= 1, got {keep_last!r}")
    if "step" in state and state["step"] != step:
        raise ValueError(f"state['step'] = {state['step']!r} differs from step = {step}")
    for key in state:
        if not isinstance(key, str) or not _KEY_RE.match(key) or key == Path(MANIFEST).stem:
            raise ValueError(f"state key {key!r} must be a file-name-safe string ([A-Za-z0-9_.-], not 'manifest')")

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    for stale in ckpt_dir.glob(f".tmp-{_PREFIX}*"):  # left by a crashed save
        shutil.rmtree(stale, ignore_errors=True)
    final = ckpt_dir / f"{_PREFIX}{step:08d}"
    tmp = ckpt_dir / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files: dict[str, dict[str, Any]] = {}
        for key, value in state.items():
            if _is_flat_tensor_dict(value):
                name, kind = f"{key}.safetensors", "safetensors"
                from safetensors.torch import save_file

                save_file(_for_safetensors(value), str(tmp / name))
            else:
                name, kind = f"{key}.pt", "torch"
                torch.save(value, tmp / name)
            digest, size = _hash_and_fsync(tmp / name)
            files[name] = {"key": key, "kind": kind, "bytes": size, "sha256": digest}
        manifest = {"format": _FORMAT, "step": step,
                    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "files": files}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            trash = ckpt_dir / f".tmp-{_PREFIX}old-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    for other in list_checkpoints(ckpt_dir):
        if checkpoint_step(other) > step:
            shutil.rmtree(other, ignore_errors=True)
    if keep_last is not None:
        older = [p for p in list_checkpoints(ckpt_dir) if p != final]
        for old in older[: max(0, len(older) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------------------------------
# verify and load


def _fail(path: Path, what: str, fix: str | None = None) -> CheckpointError:
    others = [p.name for p in list_checkpoints(path.parent) if p != path]
    if fix is None:
        fix = "delete this checkpoint directory and resume from an earlier one"
        fix += f" ({', '.join(others[-3:])} exist beside it)" if others else " (none exist beside it)"
    return CheckpointError(f"checkpoint {path}: {what}. Fix: {fix}.")


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check ``manifest.json`` and every file's size and sha256 without deserialising; return the manifest."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "does not exist", f"check the path; checkpoints found beside it: "
                    f"{', '.join(p.name for p in list_checkpoints(path.parent)) or 'none'}")
    if not path.is_dir():
        raise _fail(path, "is not a checkpoint directory (expected a checkpoint-N directory with manifest.json)",
                    "pass the checkpoint-N directory written by save_checkpoint")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        inner = latest_checkpoint(path)
        if inner is not None:
            raise _fail(path, f"has no {MANIFEST}; it looks like a directory of checkpoints",
                        f"pass one of them, e.g. latest_checkpoint(...) = {inner}")
        raise _fail(path, f"has no {MANIFEST} (incomplete save or not a checkpoint)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"{MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise _fail(path, f"{MANIFEST} has format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                    f"expected {_FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("step"), int):
        raise _fail(path, f"{MANIFEST} lacks 'step' or 'files'")
    for name, entry in files.items():
        if not isinstance(entry, dict) or not {"key", "kind", "bytes", "sha256"} <= set(entry):
            raise _fail(path, f"{MANIFEST} entry for {name!r} is incomplete (needs key, kind, bytes, sha256)")
    for f in path.iterdir():
        if f.is_file() and f.name != MANIFEST and f.name not in files:
            raise _fail(path, f"file {f.name!r} has no entry in {MANIFEST} (cannot be verified)")
    for name, entry in files.items():
        fp = path / name
        if not fp.is_file():
            raise _fail(path, f"file {name!r} listed in {MANIFEST} is missing")
        size = fp.stat().st_size
        if size != entry["bytes"]:
            raise _fail(path, f"file {name!r} has {size} bytes, the manifest says {entry['bytes']} "
                        f"({'truncated' if size < entry['bytes'] else 'extra data'})")
        h = hashlib.sha256()
        with open(fp, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != entry["sha256"]:
            raise _fail(path, f"file {name!r} has sha256 {h.hexdigest()[:12]}…, the manifest says "
                        f"{entry['sha256'][:12]}… (corrupted or modified after saving)")
    return manifest


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu",
                    weights_only: bool = True) -> dict[str, Any]:
    """Verify and load a checkpoint directory; return ``{key: value, ..., "step": step}``.

    Any problem (missing path or manifest, missing file, size or checksum mismatch, undecodable file) raises
    :class:`~shared.errors.CheckpointError` naming the path, before anything is deserialised. ``weights_only=False``
    allows arbitrary pickled objects (only for checkpoints you trust).
    """
    path = Path(path)
    manifest = verify_checkpoint(path)
    out: dict[str, Any] = {}
    for name, entry in manifest["files"].items():
        try:
            if entry["kind"] == "safetensors":
                from safetensors.torch import load_file

                value = load_file(str(path / name), device=str(map_location))
            elif entry["kind"] == "torch":
                value = torch.load(path / name, map_location=map_location, weights_only=weights_only)
            else:
                raise _fail(path, f"unknown file kind {entry['kind']!r} for {name!r}")
        except CheckpointError:
            raise
        except Exception as e:  # any decoder error: the file is unusable
            hint = (" (it holds objects outside torch's weights_only allow-list: store plain values, or pass "
                    "weights_only=False for a trusted checkpoint)") if "weights_only" in str(e) else ""
            raise _fail(path, f"file {name!r} cannot be loaded: {type(e).__name__}: {str(e)[:300]}{hint}") from None
        out[entry["key"]] = value
    out.setdefault("step", manifest["step"])
    return out
