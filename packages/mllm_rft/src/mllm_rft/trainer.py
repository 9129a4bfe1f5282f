"""The GRPO-family trainer: questions → grouped rollouts → rewards → advantages → μ clipped updates (card §2).

One step, top to bottom (`train`):

1. take `prompts_per_step` questions from the shuffled training stream, repeat each G times, and generate with
   `rollout.generate_with_logprobs` in chunks of whole groups (log-probs of the sampled tokens recorded once, at
   τ); with DAPO dynamic sampling keep generating until `prompts_per_step` groups with unequal accuracies are
   found or `max_rounds` calls were made (`sampling.DynamicSampler`);
2. score every completion: accuracy_weight · verifier + Σ_k w_k · reward_k (`rewards.CombinedReward`), each part
   logged; advantages per `objective.compute_advantages` over the whole batch;
3. with β > 0, reference log-probs from the frozen initial policy (a copy, or the LoRA base with the adapter off);
   β = 0 builds no reference at all;
4. μ = `train.epochs` passes over the batch, each split into `train.mini_batches` optimiser steps; chunks inside a
   mini-batch accumulate gradients, weighted so the mini-batch loss is the configured aggregation over all of it;
   π_old is the generation-time policy throughout (so the ratio is 1 only at the first update, card §2);
5. log reward and parts, accuracy, format rate, length, entropy, clip fractions, KL, zero-std fraction; evaluate
   greedily on the held-out and OOD questions every `eval.every` steps; checkpoint atomically.

Resume restores the weights, optimiser, scheduler and the question stream; sampling seeds are a function of
(seed, step, round, chunk), so a resumed run continues with the same rollouts as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.training import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_config,
    to_dict,
)
from shared.training.metrics import MetricsLogger
from shared.training.plots import plot_curves

from mllm_rft.config import RFTConfig
from mllm_rft.evaluate import EvalResult, evaluate, save_examples
from mllm_rft.objective import ObjectiveConfig, compute_advantages, policy_loss, preset
from mllm_rft.prompts import decode_completions, encode_prompts
from mllm_rft.rewards import CombinedReward
from mllm_rft.rollout import Rollout, freeze_vision_tower, generate_with_logprobs, sequence_logprobs
from mllm_rft.sampling import DynamicSampler, overlong_mask
from mllm_rft.tasks import Sample, load_jsonl, load_parquet, make_split, verify

__all__ = ["Chunk", "build_objective", "build_reference", "load_data", "select_rows", "train"]


# ------------------------------------------------------------------------------------------------------ building
def build_objective(cfg: RFTConfig) -> ObjectiveConfig:
    """`objective.preset(name)` with every override that is set; Dr. GRPO's L_max = rollout.max_new_tokens."""
    o = cfg.objective
    fields = ("std_scaling", "adv_eps", "aggregation", "ratio", "clip_low", "clip_high", "dual_clip",
              "log_ratio_clamp", "beta", "kl", "loss")
    overrides = {f: getattr(o, f) for f in fields if getattr(o, f) is not None}
    return preset(o.preset, max_length=cfg.rollout.max_new_tokens, **overrides)


def build_reference(model: torch.nn.Module, objective: ObjectiveConfig, *, lora: bool) -> Any:
    """The KL reference: None when β = 0 (nothing is built), "adapter" with LoRA (the base model with the adapter
    disabled), else a frozen deep copy of the initial policy."""
    if objective.beta == 0:
        return None
    if lora:
        return "adapter"
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def _shapes(cfg: RFTConfig, split: str, n: int) -> list[Sample]:
    d = cfg.data
    return [s for t in d.tasks for s in make_split(t, split, n, seed=d.seed, image_size=d.image_size,
                                                  max_distractors=d.max_distractors)]


def _file(cfg: RFTConfig, path: str) -> list[Sample]:
    d = cfg.data
    load = load_jsonl if d.source == "jsonl" else load_parquet
    return load(path, image_root=d.image_root or None, question_key=d.question_key, answer_key=d.answer_key,
                image_key=d.image_key, reward=d.reward)


def load_data(cfg: RFTConfig) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """(training questions, {"test": …, "ood": …}) from the shapes world or local files; missing columns or
    files raise before any model is loaded."""
    d = cfg.data
    if d.source == "shapes":
        evals = {"test": _shapes(cfg, "test", d.test_size), "ood": _shapes(cfg, "ood", d.ood_size)}
        return _shapes(cfg, "train", d.train_size), {k: v for k, v in evals.items() if v}
    evals = {k: _file(cfg, p) for k, p in (("test", d.test_path), ("ood", d.ood_path)) if p}
    return _file(cfg, d.path), evals


# ------------------------------------------------------------------------------------------------------- batches
@dataclass
class Chunk:
    """One generate call's worth of completions: the processor batch, the rollout, and per-row training data."""

    inputs: dict[str, Any]
    rollout: Rollout
    samples: list[Sample]
    groups: torch.Tensor                      # (n,) global group id of each row
    accuracy: torch.Tensor = field(default=None)   # (n,) verifier score
    reward: torch.Tensor = field(default=None)     # (n,) total reward
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    advantages: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None     # (n, T) completion mask, truncated rows zeroed with overlong filter
    ref_logp: torch.Tensor | None = None


def _rows_of_images(inputs: dict[str, Any]) -> list[slice] | None:
    """Patch ranges of each row's image in a Qwen2-VL style `pixel_values` (Σ patches, D); None otherwise."""
    grid = inputs.get("image_grid_thw")
    if grid is None:
        return None
    counts = grid.prod(-1).tolist()
    starts = np.cumsum([0, *counts])
    return [slice(int(starts[i]), int(starts[i + 1])) for i in range(len(counts))]


def select_rows(chunk: Chunk, idx: Sequence[int]) -> Chunk:
    """The rows `idx` of a chunk (inputs, rollout and per-row data); prompts keep the chunk's left padding."""
    idx_t = torch.as_tensor(list(idx), dtype=torch.long)
    n = chunk.rollout.completion_ids.shape[0]
    patches = _rows_of_images(chunk.inputs)
    inputs: dict[str, Any] = {}
    for k, v in chunk.inputs.items():
        if k == "pixel_values" and patches is not None:
            inputs[k] = torch.cat([v[patches[i]] for i in idx_t.tolist()])
        elif isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n:
            inputs[k] = v[idx_t]
        else:
            inputs[k] = v
    r = chunk.rollout
    rollout = Rollout(r.prompt_ids[idx_t], r.prompt_mask[idx_t], r.completion_ids[idx_t], r.completion_mask[idx_t],
                      r.logprobs[idx_t], r.temperature, r.eos_token_id, r.pad_token_id,
                      None if r.entropy is None else r.entropy[idx_t])

    def pick(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[idx_t]

    return Chunk(inputs, rollout, [chunk.samples[i] for i in idx_t.tolist()], chunk.groups[idx_t],
                 pick(chunk.accuracy), pick(chunk.reward), {k: v[idx_t] for k, v in chunk.parts.items()},
                 pick(chunk.advantages), pick(chunk.loss_mask), pick(chunk.ref_logp))


class QuestionStream:
    """Training questions in a fresh permutation per epoch (seeded), resumable from (epoch, position)."""

    def __init__(self, samples: Sequence[Sample], seed: int):
        self.samples, self.seed, self.epoch, self.pos = list(samples), seed, 0, 0
        self._order = self._perm()

    def _perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.samples))

    def take(self, n: int) -> list[Sample]:
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._perm()
            out.append(self.samples[int(self._order[self.pos])])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._perm()


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------------------- rewards
class Scorer:
    """accuracy_weight · verify(sample, completion) + CombinedReward(reward.weights) on the same completion."""

    def __init__(self, cfg: RFTConfig):
        self.acc_weight = cfg.reward.accuracy_weight
        self.combined = CombinedReward(cfg.reward.weights, cfg.reward.kwargs) if cfg.reward.weights else None
        self.max_new_tokens = cfg.rollout.max_new_tokens

    def __call__(self, samples: Sequence[Sample], texts: Sequence[str], rollout: Rollout
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        acc = torch.tensor([verify(s, t) for s, t in zip(samples, texts)], dtype=torch.float64)
        total = self.acc_weight * acc
        parts = {"accuracy": acc}
        if self.combined is not None:
            infos = [{"completion_ids": ids[m.bool()].tolist()} if "repetition" in self.combined.names else {}
                     for ids, m in zip(rollout.completion_ids, rollout.completion_mask)]
            infos = [dict(i, **self._length_info(n)) for i, n in zip(infos, rollout.lengths.tolist())]
            totals, comps = self.combined(texts, [s.target for s in samples], infos)
            total = total + torch.tensor(totals, dtype=torch.float64).nan_to_num(0.0)
            parts.update({k: torch.tensor(v, dtype=torch.float64) for k, v in comps.items()})
        return acc, total, parts

    def _length_info(self, n: int) -> dict[str, int]:
        if self.combined is None or "soft_overlong" not in self.combined.names:
            return {}
        return {"length": int(n)}


# ------------------------------------------------------------------------------------------------------- the loop
def _device(cfg: RFTConfig) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not cfg.run.cpu else "cpu")


def _ref_context(model: Any, reference: Any):
    return model.disable_adapter() if reference == "adapter" else contextlib.nullcontext()


def _generate_groups(model, processor, questions: Sequence[Sample], *, cfg: RFTConfig, first_group: int,
                     seed_parts: tuple[int, ...], scorer: Scorer) -> list[Chunk]:
    """G completions per question, in chunks of whole groups, scored."""
    G, r = cfg.rollout.group_size, cfg.rollout
    per_chunk = max(1, min(r.micro_batch_size // G, math.ceil(len(questions) / max(1, cfg.train.mini_batches))))
    chunks = []
    for c, start in enumerate(range(0, len(questions), per_chunk)):
        qs = questions[start: start + per_chunk]
        samples = [q for q in qs for _ in range(G)]
        inputs = encode_prompts(processor, samples)
        rollout = generate_with_logprobs(model, inputs, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                         top_p=r.top_p, seed=_seed(*seed_parts, c))
        texts = decode_completions(processor, rollout)
        acc, total, parts = scorer(samples, texts, rollout)
        groups = torch.arange(first_group + start, first_group + start + len(qs)).repeat_interleave(G)
        chunks.append(Chunk(inputs, rollout, samples, groups, acc, total, parts))
    return chunks


def _split_groups(chunks: Sequence[Chunk], G: int) -> list[Chunk]:
    """One chunk per group (for dynamic sampling's per-group filter)."""
    return [select_rows(c, range(i, i + G)) for c in chunks for i in range(0, c.groups.numel(), G)]


def _concat(chunks: Sequence[Chunk]) -> Chunk:
    """Rows of several chunks in one (prompts re-padded on the left, completions on the right)."""
    if len(chunks) == 1:
        return chunks[0]
    P = max(c.rollout.prompt_ids.shape[1] for c in chunks)
    T = max(c.rollout.completion_ids.shape[1] for c in chunks)
    pad = chunks[0].rollout.pad_token_id

    def left(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (P - t.shape[1], 0), value=value)

    def right(t: torch.Tensor, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, T - t.shape[1]), value=value)

    inputs: dict[str, Any] = {}
    for k in chunks[0].inputs:
        vals = [c.inputs[k] for c in chunks]
        if k == "input_ids":
            inputs[k] = torch.cat([left(v, pad) for v in vals])
        elif k in ("attention_mask", "mm_token_type_ids", "token_type_ids"):
            inputs[k] = torch.cat([left(v, 0) for v in vals])
        elif isinstance(vals[0], torch.Tensor):
            inputs[k] = torch.cat(vals)
        else:
            inputs[k] = vals[0]
    r0 = chunks[0].rollout
    rollout = Rollout(
        torch.cat([left(c.rollout.prompt_ids, pad) for c in chunks]),
        torch.cat([left(c.rollout.prompt_mask, 0) for c in chunks]),
        torch.cat([right(c.rollout.completion_ids, pad) for c in chunks]),
        torch.cat([right(c.rollout.completion_mask, 0) for c in chunks]),
        torch.cat([right(c.rollout.logprobs, 0.0) for c in chunks]),
        r0.temperature, r0.eos_token_id, r0.pad_token_id,
        None if r0.entropy is None else torch.cat([right(c.rollout.entropy, 0.0) for c in chunks]),
    )
    cat = torch.cat
    return Chunk(inputs, rollout, [s for c in chunks for s in c.samples], cat([c.groups for c in chunks]),
                 cat([c.accuracy for c in chunks]), cat([c.reward for c in chunks]),
                 {k: cat([c.parts[k] for c in chunks]) for k in chunks[0].parts})


def _evaluate_all(model, processor, evals: dict[str, list[Sample]], cfg: RFTConfig) -> dict[str, EvalResult]:
    """Greedy accuracy per split ("test", "ood"), plus avg@k at the rollout temperature ("test_sampled", …) when
    eval.samples = k > 0 (same evaluation seed at every step, so curves compare like with like)."""
    n_tokens = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
    out = {}
    for name, samples in evals.items():
        out[name] = evaluate(model, processor, samples, batch_size=cfg.eval.batch_size, max_new_tokens=n_tokens)
        if cfg.eval.samples:
            out[f"{name}_sampled"] = evaluate(model, processor, samples, batch_size=cfg.eval.batch_size,
                                              max_new_tokens=n_tokens, num_samples=cfg.eval.samples,
                                              temperature=cfg.rollout.temperature, seed=_seed(cfg.data.seed, 7))
    return out


def train(cfg: RFTConfig) -> dict[str, Any]:
    """Run (or resume) GRPO-family training; returns the summary also written to run_dir/eval.json."""
    from mllm_rft.models import add_lora, load_vlm

    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    run_dir, device = Path(cfg.run.dir), _device(cfg)
    train_set, evals = load_data(cfg)  # file errors before the model loads
    objective = build_objective(cfg)
    scorer = Scorer(cfg)
    model, processor = load_vlm(cfg.model.path, dtype=cfg.model.dtype, device=device,
                                attn_implementation=cfg.model.attn_implementation)
    if cfg.model.freeze_vision:
        freeze_vision_tower(model)
    lora = cfg.model.lora_rank > 0
    if lora:
        torch.manual_seed(cfg.train.seed)
        model = add_lora(model, rank=cfg.model.lora_rank, alpha=cfg.model.lora_alpha,
                         dropout=cfg.model.lora_dropout, targets=cfg.model.lora_targets)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    reference = build_reference(model, objective, lora=lora)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    warmup = cfg.train.warmup
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    stream = QuestionStream(train_set, cfg.train.seed)

    ckpt_dir, start = run_dir / "checkpoints", 0
    ckpt = latest_checkpoint(ckpt_dir) if cfg.run.resume else None
    history: dict[str, Any] = {}
    if ckpt is not None:
        state = load_checkpoint(ckpt, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.load_state_dict(state["stream"])
        history = state.get("history", {})
        start = state["step"]
        print(f"resuming {run_dir} from step {start}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.json")
    logger = MetricsLogger(run_dir, resume_step=start if ckpt is not None else None)
    n_train = sum(p.numel() for p in params)
    print(f"mllm-rft: {type(model).__name__}, {n_train / 1e6:.2f} M trainable parameters, objective "
          f"{cfg.objective.preset} (β {objective.beta}), G {cfg.rollout.group_size} × {cfg.rollout.prompts_per_step} "
          f"questions a step, {len(train_set)} training questions, device {device}")

    def run_eval(step: int) -> None:
        results = _evaluate_all(model, processor, evals, cfg)
        record = {k: v for name, res in results.items() for k, v in res.metrics(name).items()}
        if step == 0:
            history["before"] = {name: res.summary() for name, res in results.items()}
        history["after"] = {name: res.summary() for name, res in results.items()}
        history.setdefault("curve", []).append({"step": step, **record})
        logger.log(record, step)

    def save(step: int) -> None:
        save_checkpoint(ckpt_dir, step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "scheduler": scheduler.state_dict(), "stream": stream.state_dict(),
                                         "history": history}, keep_last=cfg.run.keep_last)

    if start == 0 and evals:
        if cfg.eval.examples:
            _save_example_grids(model, processor, evals, cfg, run_dir, "before")
        run_eval(0)
    steps = range(start + 1, cfg.train.steps + 1)
    if cfg.run.progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, initial=start, total=cfg.train.steps, desc="mllm-rft")
    G = cfg.rollout.group_size
    for step in steps:
        t0 = time.time()
        model.eval()
        with torch.no_grad():
            chunks, ds_metrics = _collect(model, processor, stream, cfg, step, scorer)
        metrics = _batch_metrics(chunks, G, ds_metrics)
        if chunks:
            _prepare(chunks, objective, cfg, model, reference)
            metrics.update(_update(model, chunks, objective, optimizer, scheduler, params, cfg))
        metrics["time/step_s"] = time.time() - t0
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        logger.log(metrics, step)
        if cfg.run.progress:
            steps.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc=f"{metrics['accuracy']:.3f}")
        if evals and ((cfg.eval.every and step % cfg.eval.every == 0) or step == cfg.train.steps):
            run_eval(step)
        if (cfg.run.save_every and step % cfg.run.save_every == 0) or step == cfg.train.steps:
            save(step)
    logger.close()
    return _finish(model, processor, evals, cfg, run_dir, history, lora)


def _collect(model, processor, stream: QuestionStream, cfg: RFTConfig, step: int, scorer: Scorer
             ) -> tuple[list[Chunk], dict[str, float]]:
    """This step's chunks: one round, or DAPO dynamic sampling over up to `max_rounds` rounds."""
    r, G, seed = cfg.rollout, cfg.rollout.group_size, cfg.train.seed
    if not r.dynamic_sampling:
        return _generate_groups(model, processor, stream.take(r.prompts_per_step), cfg=cfg, first_group=0,
                                seed_parts=(seed, step, 0), scorer=scorer), {}
    made = {"rounds": 0, "groups": 0}

    def generate(n: int) -> list[Chunk]:
        chunks = _generate_groups(model, processor, stream.take(n), cfg=cfg, first_group=made["groups"],
                                  seed_parts=(seed, step, made["rounds"]), scorer=scorer)
        made["rounds"] += 1
        made["groups"] += n
        return _split_groups(chunks, G)

    result = DynamicSampler(generate, r.prompts_per_step, r.max_rounds,
                            rewards_fn=lambda c: c.accuracy.tolist()).sample()
    per_chunk = max(1, min(r.micro_batch_size // G, math.ceil(r.prompts_per_step / cfg.train.mini_batches)))
    kept = result.groups
    return [_concat(kept[i: i + per_chunk]) for i in range(0, len(kept), per_chunk)], result.metrics()


def _prepare(chunks: list[Chunk], objective: ObjectiveConfig, cfg: RFTConfig, model, reference) -> None:
    """Advantages over the whole batch, the loss mask (overlong filter), reference log-probs when β > 0."""
    rewards = torch.cat([c.reward for c in chunks])
    groups = torch.cat([c.groups for c in chunks])
    adv = compute_advantages(rewards, groups, objective).float()
    offset = 0
    for c in chunks:
        n = c.groups.numel()
        c.advantages = adv[offset: offset + n]
        offset += n
        c.loss_mask = c.rollout.completion_mask.clone()
        if cfg.rollout.overlong_filter:
            finished = (c.rollout.completion_mask == 0).any(-1) | _ends_with_eos(c.rollout)
            keep = overlong_mask(c.rollout.lengths, cfg.rollout.max_new_tokens, finished=finished)
            c.loss_mask = c.loss_mask * keep[:, None].long()
        if reference is not None:
            ref_model = model if reference == "adapter" else reference
            with torch.no_grad(), _ref_context(model, reference):
                c.ref_logp = sequence_logprobs(ref_model, c.rollout, c.inputs).float().cpu()


def _ends_with_eos(r: Rollout) -> torch.Tensor:
    last = (r.lengths - 1).clamp(min=0)
    tok = r.completion_ids.gather(1, last[:, None]).squeeze(1)
    return torch.isin(tok, torch.tensor(r.eos_token_id, device=tok.device))


def _update(model, chunks: list[Chunk], objective: ObjectiveConfig, optimizer, scheduler, params,
            cfg: RFTConfig) -> dict[str, float]:
    """μ passes × mini-batches of clipped updates; returns averaged loss metrics."""
    model.train()
    device = next(model.parameters()).device
    parts = [list(p) for p in np.array_split(np.arange(len(chunks)), min(cfg.train.mini_batches, len(chunks)))]
    sums: dict[str, float] = {}
    extremes: dict[str, float] = {}
    count = 0
    for _ in range(cfg.train.epochs):
        for part in parts:
            mb = [chunks[i] for i in part]
            n_rows = sum(c.groups.numel() for c in mb)
            n_tokens = float(sum(c.loss_mask.sum() for c in mb))
            if n_tokens == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            for c in mb:
                m = c.loss_mask.to(device)
                if m.sum() == 0:
                    continue
                logp = sequence_logprobs(model, c.rollout, c.inputs).float()
                token_mean = objective.aggregation == "token_mean"
                loss, info = policy_loss(
                    logp, c.rollout.logprobs.to(device), c.advantages.to(device), m, objective,
                    None if c.ref_logp is None else c.ref_logp.to(device),
                    num_active_tokens=n_tokens if token_mean else None)
                if not token_mean:
                    loss = loss * (c.groups.numel() / n_rows)
                loss.backward()
                info["loss"] = loss.item()
                for k, v in info.items():
                    if not math.isfinite(v):
                        continue
                    if k in ("ratio_min", "ratio_max"):
                        pick = min if k == "ratio_min" else max
                        extremes[k] = pick(extremes.get(k, v), v)
                    else:
                        sums[k] = sums.get(k, 0.0) + v
                count += 1
            if cfg.train.max_grad_norm:
                gn = torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(gn) * len(mb)
            optimizer.step()
            scheduler.step()
    out = {f"loss/{k}" if k != "grad_norm" else k: v / max(count, 1) for k, v in sums.items()}
    return {**out, **{f"loss/{k}": v for k, v in extremes.items()}}


def _batch_metrics(chunks: list[Chunk], G: int, extra: dict[str, float]) -> dict[str, float]:
    if not chunks:
        return {"reward/mean": float("nan"), "accuracy": float("nan"), **extra}
    reward = torch.cat([c.reward for c in chunks])
    groups = torch.cat([c.groups for c in chunks])
    lengths = torch.cat([c.rollout.lengths for c in chunks]).double()
    out = {"reward/mean": reward.mean().item(), "reward/std": reward.std().item() if reward.numel() > 1 else 0.0,
           "accuracy": torch.cat([c.accuracy for c in chunks]).mean().item(),
           "length/mean": lengths.mean().item(), "length/max": lengths.max().item()}
    for k in chunks[0].parts:
        v = torch.cat([c.parts[k] for c in chunks])
        out[f"reward/{k}"] = v[~v.isnan()].mean().item() if (~v.isnan()).any() else float("nan")
    if "format" in chunks[0].parts:
        out["format_rate"] = out["reward/format"]
    ent = [(c.rollout.entropy.sum(), c.rollout.completion_mask.sum()) for c in chunks if c.rollout.entropy is not None]
    if ent:
        out["entropy"] = (sum(e for e, _ in ent) / max(1, sum(n for _, n in ent))).item()
    zero = [float(reward[groups == g].max() == reward[groups == g].min()) for g in groups.unique()]
    out["zero_std_fraction"] = sum(zero) / len(zero)
    out["completions"] = float(reward.numel())
    return {**out, **extra}


def _save_example_grids(model, processor, evals: dict[str, list[Sample]], cfg: RFTConfig, run_dir: Path,
                        tag: str) -> None:
    n_tokens = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
    for name, samples in evals.items():
        few = samples[: cfg.eval.examples]
        res = evaluate(model, processor, few, batch_size=cfg.eval.batch_size, max_new_tokens=n_tokens)
        save_examples(few, res, run_dir / f"examples_{name}_{tag}.png")


def _finish(model, processor, evals, cfg: RFTConfig, run_dir: Path, history: dict, lora: bool) -> dict[str, Any]:
    summary = {"steps": cfg.train.steps, "objective": cfg.objective.preset, **history}
    if evals and cfg.eval.examples:
        _save_example_grids(model, processor, evals, cfg, run_dir, "after")
    keys = ["reward/mean", "accuracy", "reward/format", "length/mean", "entropy", "zero_std_fraction"]
    keys += [f"{name}/accuracy" for name in history.get("after", {})]
    with contextlib.suppress(ValueError):
        plot_curves(run_dir, keys, run_dir / "curves.png", smooth=0.6)
    policy = model.merge_and_unload() if lora else model
    policy.save_pretrained(run_dir / "policy")
    processor.save_pretrained(run_dir / "policy")
    (run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    return summary


def iter_eval_lines(summary: dict[str, Any]) -> Iterator[str]:
    """'split: before → after' lines for the CLI."""
    before, after = summary.get("before", {}), summary.get("after", {})
    for name in after:
        b = before.get(name, {})
        yield (f"{name}: accuracy {b.get('accuracy', float('nan')):.3f} → {after[name]['accuracy']:.3f}, "
               f"format {b.get('format_rate', float('nan')):.3f} → {after[name]['format_rate']:.3f}, "
               f"length {b.get('length', float('nan')):.1f} → {after[name]['length']:.1f}")
