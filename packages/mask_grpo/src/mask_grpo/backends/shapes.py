"""The shapes-world masked text-to-image base behind `mask_grpo.policy.MaskedPolicy` (mask_grpo.md §10).

    policy = ShapesMaskedPolicy.from_pretrained("assets/shapes_masked_base")   # or tiny_shapes_policy() in tests
    cond = policy.encode(["a photo of a red circle"])
    logits = policy.logits(tokens, cond)        # (B, N, K), tokens (B, N) with policy.mask_id = K at masked places
    images = policy.decode(final_tokens)        # (B, 3, 32, 32) in [0, 1]

Three parts, none of them borrowed weights:
- a word-level text tokenizer over the closed shapes grammar (`shared.shapes.all_prompts` words + <pad> <unk> <bos>);
  a prompt becomes [<bos>, w_1, …, w_m, <pad>, …]; the empty prompt "" is [<bos>], the unconditional input of CFG;
- the weight-free patch codec (`shapes_tokenizer.PatchCodec`): N = 64 codes of 4×4 patches, K = 1 + 6·P codes;
- a tiny transformer over the sequence [text (L) ; image (N)] with learned position embeddings, pre-LN blocks and
  Show-o's omni-attention pattern [our reading of §10]: text position i attends to text j ≤ i (causal, pads
  excluded); image positions attend to every real text token and every image token (full). The head reads the N
  image positions and scores the K image codes; [MASK] = K is an extra input embedding only.

Files of a saved folder: `config.json` (format, model and codec configs, text vocabulary), `model.safetensors`
(transformer), `codebook.safetensors` (binary patch patterns and palette).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask_grpo.backends.shapes_tokenizer import PatchCodec, PatchCodecConfig
from mask_grpo.policy import Cond

FORMAT = "mask_grpo.shapes_masked_base/1"
CONFIG_FILE, MODEL_FILE, CODEBOOK_FILE = "config.json", "model.safetensors", "codebook.safetensors"
SPECIALS = ("<pad>", "<unk>", "<bos>")
PAD, UNK, BOS = 0, 1, 2


# ----------------------------------------------------------------------------------------------- text
def _words(prompt: str) -> list[str]:
    return re.sub(r"[.,]", " ", prompt.lower()).split()


def shapes_vocabulary() -> list[str]:
    """<pad>, <unk>, <bos>, then every word of the shapes grammar (`all_prompts()`), sorted."""
    from shared.shapes.prompts import all_prompts

    words = sorted({w for r in all_prompts() for w in _words(r["prompt"])})
    return list(SPECIALS) + words


def longest_prompt() -> int:
    """Words in the longest prompt of the grammar (10: "a photo of a red square and a blue circle")."""
    from shared.shapes.prompts import all_prompts

    return max(len(_words(r["prompt"])) for r in all_prompts())


class WordTokenizer:
    """Word-level tokenizer: lower-case, split on spaces (full stops and commas dropped), unknown words → <unk>."""

    def __init__(self, vocab: Sequence[str], max_len: int):
        if tuple(vocab[:3]) != SPECIALS:
            raise ValueError(f"text vocabulary must start with {SPECIALS}, got {list(vocab[:3])}")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_len = max_len

    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(ids, mask): (B, max_len) long and bool; ids = [<bos>, words…, <pad>…], mask True on <bos> and words."""
        ids = torch.full((len(prompts), self.max_len), PAD, dtype=torch.long)
        for b, p in enumerate(prompts):
            row = [BOS] + [self.index.get(w, UNK) for w in _words(p)]
            if len(row) > self.max_len:
                raise ValueError(f"prompt {p!r} has {len(row) - 1} words; this model reads at most "
                                 f"{self.max_len - 1} (config text_len). Shorten the prompt.")
            ids[b, : len(row)] = torch.tensor(row)
        return ids, ids != PAD


# ----------------------------------------------------------------------------------------------- transformer
@dataclass(frozen=True)
class ShapesTransformerConfig:
    """`vocab_size` text words (with specials), `text_len` L (with <bos>), `num_image_tokens` N, `codebook_size` K
    (inputs K + 1 with [MASK] = K), `width` d, `depth` blocks, `heads`, MLP hidden `mlp_ratio`·d."""

    vocab_size: int
    text_len: int
    num_image_tokens: int = 64
    codebook_size: int = 577
    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width={self.width} must be divisible by heads={self.heads}; fix: e.g. heads=4")
        for name in ("vocab_size", "text_len", "num_image_tokens", "codebook_size", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be ≥ 1")


def omni_attention_mask(text_mask: Tensor, num_image_tokens: int) -> Tensor:
    """(B, L+N, L+N) bool, True = may attend: causal among real text tokens, full over image, image → all real
    text (Show-o's omni-attention, mask_grpo.md §10). Text queries never see image keys."""
    b, length = text_mask.shape
    n, dev = num_image_tokens, text_mask.device
    total = length + n
    allow = torch.zeros(b, total, total, dtype=torch.bool, device=dev)
    causal = torch.ones(length, length, dtype=torch.bool, device=dev).tril()
    allow[:, :length, :length] = causal & text_mask[:, None, :]
    allow[:, length:, :length] = text_mask[:, None, :]
    allow[:, length:, length:] = True
    return allow


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN x), then x + MLP(LN x)."""

    def __init__(self, cfg: ShapesTransformerConfig):
        super().__init__()
        d = cfg.width
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d))

    def forward(self, x: Tensor, allow: Tensor) -> Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allow[:, None], dropout_p=p)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
        return x + self.mlp(self.ln2(x))


class ShapesMaskedTransformer(nn.Module):
    """Text + image token transformer with omni-attention; `forward` → (B, N, K) logits over the image codes."""

    def __init__(self, cfg: ShapesTransformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.text_emb = nn.Embedding(cfg.vocab_size, d)
        self.image_emb = nn.Embedding(cfg.codebook_size + 1, d)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.text_len + cfg.num_image_tokens, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.codebook_size)
        self.apply(self._init)
        nn.init.normal_(self.pos_emb, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def hidden(self, text_ids: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
        """Final hidden states (B, L+N, d) of the whole sequence (text first)."""
        cfg = self.cfg
        if text_ids.shape[1] != cfg.text_len or image_tokens.shape[1] != cfg.num_image_tokens:
            raise ValueError(f"expected text (B, {cfg.text_len}) and image tokens (B, {cfg.num_image_tokens}); "
                             f"got {tuple(text_ids.shape)} and {tuple(image_tokens.shape)}")
        x = torch.cat([self.text_emb(text_ids), self.image_emb(image_tokens)], dim=1) + self.pos_emb
        allow = omni_attention_mask(text_mask.bool(), cfg.num_image_tokens)
        for blk in self.blocks:
            x = blk(x, allow)
        return self.ln_out(x)

    def forward(self, text_ids: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
        return self.head(self.hidden(text_ids, text_mask, image_tokens)[:, self.cfg.text_len:])


# ----------------------------------------------------------------------------------------------- policy
def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path} not found ({what}). A shapes masked base folder holds {CONFIG_FILE}, {MODEL_FILE} and "
        f"{CODEBOOK_FILE}; point model.path at one (the committed base is assets/shapes_masked_base) or build it "
        f"with `python tools/train_shapes_masked_base.py --out DIR`.")


@dataclass
class ShapesPolicyConfig:
    """Everything `from_pretrained` needs besides the tensors: model and codec configs and the text vocabulary."""

    model: ShapesTransformerConfig
    codec: PatchCodecConfig
    vocab: list[str] = field(default_factory=list)
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps({"format": self.format, "model": asdict(self.model), "codec": asdict(self.codec),
                           "vocab": self.vocab}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: Path | str = "<json>") -> ShapesPolicyConfig:
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: format {d.get('format')!r} is not {FORMAT!r}; not a shapes masked base")
        return cls(ShapesTransformerConfig(**d["model"]), PatchCodecConfig(**d["codec"]), list(d["vocab"]), FORMAT)


class ShapesMaskedPolicy:
    """`MaskedPolicy` for the shapes world (module doc). `mask_id` = K, `codebook_size` = K, `grid` = (8, 8)."""

    def __init__(self, model: ShapesMaskedTransformer, codec: PatchCodec, text: WordTokenizer):
        if model.cfg.codebook_size != codec.codebook_size or model.cfg.num_image_tokens != codec.grid[0] * codec.grid[1]:
            raise ValueError(f"transformer (K={model.cfg.codebook_size}, N={model.cfg.num_image_tokens}) does not "
                             f"match the codec (K={codec.codebook_size}, grid={codec.grid})")
        self.model, self.codec, self.text = model, codec, text
        self.codebook_size = codec.codebook_size
        self.mask_id = codec.codebook_size
        self.grid = codec.grid

    @property
    def device(self) -> torch.device:
        return self.model.pos_emb.device

    @property
    def config(self) -> ShapesPolicyConfig:
        return ShapesPolicyConfig(self.model.cfg, self.codec.cfg, list(self.text.vocab))

    @classmethod
    def build(cls, codec: PatchCodec, *, width: int = 128, depth: int = 3, heads: int = 4, mlp_ratio: int = 4,
              dropout: float = 0.0, seed: int = 0) -> ShapesMaskedPolicy:
        """A freshly initialised (seeded) transformer over `codec` and the shapes-grammar vocabulary."""
        vocab = shapes_vocabulary()
        cfg = ShapesTransformerConfig(vocab_size=len(vocab), text_len=longest_prompt() + 1,
                                      num_image_tokens=codec.grid[0] * codec.grid[1],
                                      codebook_size=codec.codebook_size, width=width, depth=depth, heads=heads,
                                      mlp_ratio=mlp_ratio, dropout=dropout)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ShapesMaskedTransformer(cfg)
        return cls(model, codec, WordTokenizer(vocab, cfg.text_len))

    # ---- MaskedPolicy
    def encode(self, prompts: Sequence[str]) -> Cond:
        """{"text_ids": (B, L) long, "text_mask": (B, L) bool} on the model's device; "" is unconditional."""
        ids, mask = self.text(list(prompts))
        return {"text_ids": ids.to(self.device), "text_mask": mask.to(self.device)}

    def logits(self, tokens: Tensor, cond: Cond) -> Tensor:
        """(B, N, K) float32 scores of the K codes at every position of `tokens` (B, N) (mask_id = K allowed)."""
        return self.model(cond["text_ids"], cond["text_mask"], tokens).float()

    def decode(self, tokens: Tensor) -> Tensor:
        """(B, 3, 32, 32) float32 in [0, 1] by codebook lookup (no mask tokens)."""
        return self.codec.decode(tokens)

    def trainable(self) -> nn.Module:
        return self.model

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ShapesMaskedPolicy:
        """Move (and optionally cast) the transformer; returns self. The codec is a lookup table and follows."""
        self.model.to(device=device, dtype=dtype)
        return self

    # ---- persistence
    def save_pretrained(self, directory: str | Path, *, dtype: torch.dtype | None = None) -> Path:
        """Write config.json, model.safetensors (cast to `dtype` if given) and codebook.safetensors."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", dtype=dtype or v.dtype).contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(out / MODEL_FILE), metadata={"format": FORMAT})
        save_file(self.codec.state(), str(out / CODEBOOK_FILE), metadata={"format": FORMAT})
        (out / CONFIG_FILE).write_text(self.config.to_json() + "\n")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = torch.float32) -> ShapesMaskedPolicy:
        """Load a folder written by `save_pretrained` (weights cast to `dtype`, float32 by default)."""
        from safetensors.torch import load_file

        root = Path(directory)
        if not root.is_dir():
            raise _missing(root, "no such folder")
        for name in (CONFIG_FILE, MODEL_FILE, CODEBOOK_FILE):
            if not (root / name).is_file():
                raise _missing(root / name, "missing file")
        cfg = ShapesPolicyConfig.from_json((root / CONFIG_FILE).read_text(), root / CONFIG_FILE)
        codec = PatchCodec.from_state(cfg.codec, load_file(str(root / CODEBOOK_FILE)), root / CODEBOOK_FILE)
        model = ShapesMaskedTransformer(cfg.model)
        state = load_file(str(root / MODEL_FILE))
        model.load_state_dict({k: v.to(dtype or v.dtype) for k, v in state.items()})
        model.eval()
        policy = cls(model, codec, WordTokenizer(cfg.vocab, cfg.model.text_len))
        return policy.to(device) if device is not None else policy


def tiny_shapes_policy(*, width: int = 32, depth: int = 1, heads: int = 2, num_patterns: int = 16,
                       seed: int = 0) -> ShapesMaskedPolicy:
    """A small random-weight shapes policy for tests (codec fit on 200 renders, well under a second)."""
    codec = PatchCodec.fit(PatchCodecConfig(num_patterns=num_patterns, fit_images=200, seed=seed))
    return ShapesMaskedPolicy.build(codec, width=width, depth=depth, heads=heads, mlp_ratio=2, seed=seed)
