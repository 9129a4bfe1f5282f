"""Rewards from pretrained scorers, loaded lazily from local folders (shared_core.md §10). No hub ids, ever.

Construction checks the path (and optional dependency) at once and fails with a message naming what is missing;
weights load on the first call (or `load()`). Formulas, with v̂ = v/|v| for CLIP embeddings:

- PickScore [authors' code: Flow-GRPO `flow_grpo/pickscore_scorer.py`]: a CLIP model (CLIPModel) and processor
  (tokenizer + CLIPImageProcessor); r = exp(logit_scale) · ⟨ê_image, ê_text⟩; `normalize=True` divides by 26 as
  Flow-GRPO does (its PickScores sit around 20–23, so r/26 ≈ 0.8). Real weights: the PickScore_v1 model folder
  plus the CLIP-H processor folder (`processor_dir`), both saved locally beforehand.
- CLIPScore [Hessel et al. 2021]: r = w · max(⟨ê_image, ê_text⟩, 0) with w = 2.5.
- HPSv2 / v2.1 [authors' code: `tgxs002/HPSv2` `hpsv2/img_score.py`]: an open_clip ViT-H-14 with the HPS checkpoint's
  `state_dict`; r = ⟨ê_image, ê_text⟩. Needs `open-clip-torch` (imported only here, only when used).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from shared.rewards.base import check_batch, tensor_to_pil
from shared.rewards.registry import register_reward

PICKSCORE_NORMALIZER = 26.0
CLIPSCORE_W = 2.5

_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
_HF_LAYOUT = (
    "a local folder written by save_pretrained: config.json, model.safetensors (or pytorch_model.bin) of a "
    "CLIPModel, and the processor files preprocessor_config.json plus a tokenizer (tokenizer.json or vocab.json + "
    "merges.txt)"
)


def _check_model_dir(path: str | Path, who: str, *, model: bool, processor: bool) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{who}: weights directory {p} does not exist; expected {_HF_LAYOUT}")
    missing = []
    if model:
        if not (p / "config.json").is_file():
            missing.append("config.json")
        if not any((p / f).is_file() for f in _WEIGHT_FILES):
            missing.append(" or ".join(_WEIGHT_FILES[:2]))
    if processor:
        if not (p / "preprocessor_config.json").is_file():
            missing.append("preprocessor_config.json")
        if not any((p / f).is_file() for f in _TOKENIZER_FILES):
            missing.append("tokenizer files (" + " / ".join(_TOKENIZER_FILES) + ")")
    if missing:
        raise FileNotFoundError(f"{who}: {p} lacks {', '.join(missing)}; expected {_HF_LAYOUT}")
    return p


def _pooled(out) -> torch.Tensor:
    """transformers ≥ 5 returns an output object whose `pooler_output` is the projected embedding; 4.x a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


class _ClipEmbedder:
    """Shared loader and embedding of (image, text) pairs for CLIP-architecture scorers."""

    name = "clip"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        processor_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 32,
    ):
        same = processor_dir is None or Path(processor_dir) == Path(model_dir)
        self.model_dir = _check_model_dir(model_dir, self.name, model=True, processor=same)
        self.processor_dir = (
            self.model_dir if same else _check_model_dir(processor_dir, self.name, model=False, processor=True)
        )
        self.device, self.dtype, self.batch_size = torch.device(device), dtype, int(batch_size)
        self.model = self.tokenizer = self.image_processor = None

    def load(self):
        if self.model is None:
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

            self.model = CLIPModel.from_pretrained(self.model_dir, local_files_only=True, dtype=self.dtype)
            self.model.to(self.device).eval().requires_grad_(False)
            self.tokenizer = AutoTokenizer.from_pretrained(self.processor_dir, local_files_only=True)
            self.image_processor = AutoImageProcessor.from_pretrained(self.processor_dir, local_files_only=True)
        return self

    @torch.no_grad()
    def embed(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm image and text embeddings, float32 on CPU, each (B, D)."""
        self.load()
        max_len = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        img_out, txt_out = [], []
        for s in range(0, len(prompts), self.batch_size):
            pil = tensor_to_pil(images[s : s + self.batch_size])
            pix = self.image_processor(images=pil, return_tensors="pt")["pixel_values"]
            tok = self.tokenizer(
                prompts[s : s + self.batch_size], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
            )
            img = _pooled(self.model.get_image_features(pixel_values=pix.to(self.device, self.dtype)))
            txt = _pooled(
                self.model.get_text_features(
                    input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
                )
            )
            img_out.append(img.float().cpu())
            txt_out.append(txt.float().cpu())
        img, txt = torch.cat(img_out), torch.cat(txt_out)
        return img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)


@register_reward("pickscore")
class PickScoreReward(_ClipEmbedder):
    """PickScore: exp(logit_scale) · cos(image, text), optionally / 26 (Flow-GRPO)."""

    name = "pickscore"

    def __init__(self, model_dir: str | Path, *, normalize: bool = False, **kwargs):
        super().__init__(model_dir, **kwargs)
        self.normalize = bool(normalize)

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        check_batch(images, prompts, metadata)
        img, txt = self.embed(images, prompts)
        scores = self.model.logit_scale.detach().float().exp().cpu() * (img * txt).sum(-1)
        return scores / PICKSCORE_NORMALIZER if self.normalize else scores


@register_reward("clip_score")
class ClipScoreReward(_ClipEmbedder):
    """CLIPScore: w · max(cos(image, text), 0), w = 2.5 (Hessel et al.)."""

    name = "clip_score"

    def __init__(self, model_dir: str | Path, *, w: float = CLIPSCORE_W, **kwargs):
        super().__init__(model_dir, **kwargs)
        self.w = float(w)

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        check_batch(images, prompts, metadata)
        img, txt = self.embed(images, prompts)
        return self.w * (img * txt).sum(-1).clamp(min=0)


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(what)


@register_reward("hpsv2")
class HPSv2Reward:
    """HPSv2 / v2.1: cos(image, text) of an open_clip model carrying the HPS checkpoint (local file)."""

    name = "hpsv2"

    def __init__(self, checkpoint: str | Path, *, arch: str = "ViT-H-14", device: str | torch.device = "cpu"):
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise FileNotFoundError(
                f"hpsv2: checkpoint {self.checkpoint} not found; expected the HPS v2 / v2.1 weights file "
                "(HPS_v2_compressed.pt or HPS_v2.1_compressed.pt, a torch file with a 'state_dict') saved locally"
            )
        _require(
            "open_clip",
            "hpsv2 needs the open_clip stack, which is not installed: add `open-clip-torch` to the environment "
            "(e.g. `uv add open-clip-torch`; the `hpsv2` package also brings it)",
        )
        self.arch, self.device = arch, torch.device(device)
        self.model = self.preprocess = self.tokenizer = None

    def load(self):
        if self.model is None:
            import open_clip

            model, _, preprocess = open_clip.create_model_and_transforms(self.arch, pretrained=None, device="cpu")
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state))
            self.model = model.to(self.device).eval().requires_grad_(False)
            self.preprocess, self.tokenizer = preprocess, open_clip.get_tokenizer(self.arch)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> torch.Tensor:
        check_batch(images, prompts, metadata)
        self.load()
        pix = torch.stack([self.preprocess(im) for im in tensor_to_pil(images)]).to(self.device)
        img = self.model.encode_image(pix, normalize=True)
        txt = self.model.encode_text(self.tokenizer(prompts).to(self.device), normalize=True)
        return (img * txt).sum(-1).float().cpu()
