"""Show-o behind `MaskedPolicy`: transformers' `PhiForCausalLM` over one vocabulary of text, special and image tokens.

Card §2, §7: Show-o 1.3B (`showlab/show-o-512x512` + `showlab/magvitv2`), 1024 image tokens, 128 text tokens,
vocabulary 58498 = 50295 Phi-1.5 text tokens + 10 special + 8192 image codes + 1 mask (mask id 58497),
omni-attention, prompt `[t2i][sot]text[eot][soi]image[eoi]`, CFG with the empty prompt.

What was verified against `showlab/Show-o` (commit 45a5a2d), and our reading of it:

- **Vocabulary** (`training/prompting_utils.py`, `UniversalPrompting.__init__`): the Phi tokenizer gets
  `add_special_tokens({'pad_token': '[PAD]'})` first, then `add_tokens` of `<|soi|> <|eoi|> <|sov|> <|eov|> <|t2i|>
  <|mmu|> <|t2v|> <|v2v|> <|lvg|>` (the tuple passed by `inference_t2i.py` and `training/train.py`), so the 10 new ids
  are, in order, `SPECIAL_TOKENS` starting at `llm_vocab_size` ([PAD] = 50295, <|soi|> = 50296, <|eoi|> = 50297,
  <|t2i|> = 50300). [our reading: assumes the tokenizer has no `[PAD]` yet, true for Phi-1.5 whose length is the
  config's `llm_vocab_size`; the comment in `configs/showo_demo_512x512.yaml` lists `<|pad|>` last, the code adds it
  first.] `<|sot|>`/`<|eot|>` are the tokenizer's bos/eos ids (both `<|endoftext|>` = 50256 for Phi-1.5).
  Image code c has id `llm_vocab_size + num_new_special_tokens + c` (`models/modeling_showo.py`, `t2i_generate`;
  `inference_t2i.py` adds `len(uni_prompting.text_tokenizer)`); the mask id is `vocab_size − 1`
  (`Showo.__init__`: `register_to_config(mask_token_id=vocab_size - 1)`). `ShowoLayout` derives all of these.
- **Prompt** (`t2i_gen_prompt`): text ids without special tokens; bos prepended unless already first;
  `[<|t2i|>] + ids + [eos]`, left-padded with [PAD] to `max_text_len + 1` (max_text_len = 128 =
  `dataset.preprocessing.max_seq_length`), or truncated to `ids[:T−1] + [eos]`; then `<|soi|>`, the N image ids,
  `<|eoi|>`. The unconditional input of CFG is the prompt "" (`inference_t2i.py` builds `uncond_input_ids` from
  `[''] * len(prompts)`), which becomes `[PAD]… <|t2i|> bos eos` — the same sequence as training's condition dropout.
- **Omni-attention** (`create_attention_mask_predict_next(…, rm_pad_in_image=True)`): the image segment is
  <|soi|>…<|eoi|> inclusive; its rows attend to every non-pad position (bidirectional, including text); other rows
  are causal and, after the last pad, blind to pads; pad rows stay causal (so no row is empty). Left padding makes
  "after the last pad" = "not a pad" (`omni_attention_mask`). Show-o feeds the inverted mask additively (0 / very
  negative), position ids 0..L−1 for every row including pads (`models/phi.py`, `PhiModel.forward`), as we do.
- **Logits** (`t2i_generate`): positions `-(N+1):-1` (the image tokens), vocabulary slice
  `[llm_vocab_size + num_new_special_tokens : -1]` (the K codes, mask excluded). We apply only those rows of the LM
  head (`F.linear` on a slice of `lm_head`), which equals slicing the full logits.
- **Backbone** (`models/phi.py`): a vendored transformers Phi whose `PhiForCausalLM.__init__` forces
  `config.qk_layernorm = True` and `use_cache = False`; parameter names equal transformers' `PhiForCausalLM`
  (`model.layers.i.self_attn.{q,k,v}_proj/dense/{q,k}_layernorm`, `mlp.fc1/fc2`, `input_layernorm`,
  `model.final_layernorm`, `lm_head` with bias); rotary buffers are non-persistent. `Showo` keeps the Phi model as
  attribute `showo`, so released keys read `showo.model.…`; `ShowoTransformer` has the same attribute and loads them
  without conversion.
- **Files** (`models/modeling_utils.py`): `config.json` plus `pytorch_model.safetensors` (their safe default) or
  `pytorch_model.bin` (`training/train.py` saves with `safe_serialization=False`); we accept every name in
  `magvitv2.WEIGHT_NAMES`. `Showo.__init__` builds Phi from `AutoConfig.from_pretrained(llm_model_path)`
  (`microsoft/phi-1_5`), so the released directory holds **no Phi config**: see `resolve_phi_config`.

Size check [third-party: the PaddleNLP mirror listing `ZHUI/paddlenlp_model_readme`, `showlab/show-o-512x512/index.md`]:
its weights are 5.4 GB; `PhiConfig()` defaults (24 layers, width 2048, MLP 8192, 32 heads) with QK-LayerNorm and vocab
58498 give 1 448 176 770 parameters = 5.39 GiB in fp32, consistent. A local run of Show-o's own `PhiDecoderLayer`
(eager) with its `create_attention_mask_predict_next` mask and `t2i_generate` slicing reproduced `ShowoPolicy.logits`
to 2e-7 on a tiny config, and `UniversalPrompting(…)("t2i_gen")` reproduced `input_ids` exactly (scratch check, not
part of the test suite, which must not depend on the Show-o sources).

Not verifiable without the real weights [unknown]: the exact weight file name and config.json keys of the release
(in particular whether its `num_vq_tokens` says 1024: `training/train.py` fine-tunes from a checkpoint without updating
it, and `t2i_generate` reads the yaml's value instead; pass `num_vq_tokens=1024` for 512×512 when in doubt), and the
rotary base / partial rotary factor, which no tensor shape reveals (transformers' `PhiConfig` defaults = Phi-1/1.5).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mask_grpo.backends.magvitv2 import (
    MagvitV2,
    MagvitV2Config,
    find_weights,
    read_config_json,
    load_magvitv2,
    load_state_dict_file,
    save_state_dict,
)
from mask_grpo.policy import Cond

#: The 10 tokens Show-o appends to the Phi tokenizer, in id order from `llm_vocab_size` (see the module docstring).
SPECIAL_TOKENS: tuple[str, ...] = (
    "[PAD]", "<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>",
)


@dataclass(frozen=True)
class ShowoLayout:
    """Token ids of Show-o's single vocabulary: [text | 10 special | K image codes | mask]."""

    llm_vocab_size: int
    codebook_size: int
    num_new_special_tokens: int = len(SPECIAL_TOKENS)

    def __post_init__(self) -> None:
        if self.num_new_special_tokens != len(SPECIAL_TOKENS):
            raise ValueError(
                f"Show-o adds {len(SPECIAL_TOKENS)} special tokens {SPECIAL_TOKENS}; got num_new_special_tokens="
                f"{self.num_new_special_tokens}"
            )
        if self.llm_vocab_size <= 0 or self.codebook_size <= 0:
            raise ValueError(f"ShowoLayout needs positive sizes, got {self}")

    @classmethod
    def from_vocab(cls, vocab_size: int, llm_vocab_size: int, codebook_size: int) -> ShowoLayout:
        """Derive the special-token count from vocab = text + special + K + 1 and check it is Show-o's 10."""
        n_special = vocab_size - llm_vocab_size - codebook_size - 1
        if n_special != len(SPECIAL_TOKENS):
            raise ValueError(
                f"vocab_size {vocab_size} ≠ llm_vocab_size {llm_vocab_size} + {len(SPECIAL_TOKENS)} special + "
                f"codebook_size {codebook_size} + 1 mask"
            )
        return cls(llm_vocab_size, codebook_size, n_special)

    @property
    def image_offset(self) -> int:
        """Id of image code 0."""
        return self.llm_vocab_size + self.num_new_special_tokens

    @property
    def mask_token_id(self) -> int:
        return self.image_offset + self.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.mask_token_id + 1

    def special_id(self, token: str) -> int:
        if token not in SPECIAL_TOKENS:
            raise KeyError(f"{token!r} is not one of Show-o's special tokens {SPECIAL_TOKENS}")
        return self.llm_vocab_size + SPECIAL_TOKENS.index(token)

    @property
    def pad_id(self) -> int:
        return self.special_id("[PAD]")

    @property
    def soi_id(self) -> int:
        return self.special_id("<|soi|>")

    @property
    def eoi_id(self) -> int:
        return self.special_id("<|eoi|>")

    @property
    def t2i_id(self) -> int:
        return self.special_id("<|t2i|>")


@dataclass(frozen=True)
class ShowoConfig:
    """Show-o's config.json fields we use, plus the text length of its yaml (`dataset.preprocessing.max_seq_length`)."""

    vocab_size: int
    llm_vocab_size: int
    codebook_size: int = 8192
    num_vq_tokens: int = 1024
    max_text_len: int = 128

    def __post_init__(self) -> None:
        side = int(round(self.num_vq_tokens**0.5))
        if side * side != self.num_vq_tokens:
            raise ValueError(f"num_vq_tokens={self.num_vq_tokens} is not a square grid (Show-o decodes square grids)")
        if self.max_text_len < 2:
            raise ValueError(f"max_text_len={self.max_text_len} leaves no room for bos and eos")
        ShowoLayout.from_vocab(self.vocab_size, self.llm_vocab_size, self.codebook_size)

    @property
    def layout(self) -> ShowoLayout:
        return ShowoLayout.from_vocab(self.vocab_size, self.llm_vocab_size, self.codebook_size)

    @property
    def grid(self) -> tuple[int, int]:
        side = int(round(self.num_vq_tokens**0.5))
        return side, side

    def to_json_dict(self) -> dict[str, Any]:
        """Show-o's config.json keys (`Showo.__init__`'s registered arguments)."""
        return {
            "_class_name": "Showo",
            "w_clip_vit": False,
            "vocab_size": self.vocab_size,
            "llm_vocab_size": self.llm_vocab_size,
            "codebook_size": self.codebook_size,
            "num_vq_tokens": self.num_vq_tokens,
            "num_new_special_tokens": len(SPECIAL_TOKENS),
            "mask_token_id": self.layout.mask_token_id,
        }


def omni_attention_mask(ids: Tensor, pad_id: int, soi_id: int, eoi_id: int) -> Tensor:
    """Show-o's omni-attention as booleans (B, L, L), True = query row may attend to key column.

    Image rows (<|soi|>…<|eoi|> inclusive): every non-pad key. Text rows: keys j ≤ i that are not pads. Pad rows: keys
    j ≤ i (they see only earlier pads under left padding; never empty). Matches `create_attention_mask_predict_next`
    with `rm_pad_in_image=True` for left-padded sequences (module docstring).
    """
    b, length = ids.shape
    is_pad = ids == pad_id
    starts = torch.cumsum(ids == soi_id, dim=1)
    ends = torch.cumsum(ids == eoi_id, dim=1)
    in_image = (starts > ends) | (ids == soi_id) | (ids == eoi_id)
    causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
    keys_ok = ~is_pad[:, None, :]
    rows = torch.where(in_image[:, :, None], keys_ok, causal & keys_ok)
    return torch.where(is_pad[:, :, None], causal.expand(b, -1, -1), rows)


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, L, L) booleans → (B, 1, L, L) additive mask: 0 where allowed, the dtype's minimum elsewhere."""
    zeros = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return zeros.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def phi_config_for_showo(base: Any, vocab_size: int) -> Any:
    """A copy of a Phi config as Show-o uses it: resized vocabulary, QK-LayerNorm forced on, no KV cache."""
    from transformers import PhiConfig

    d = base.to_dict()
    for key in ("architectures", "auto_map", "_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        d.pop(key, None)
    d.update(vocab_size=vocab_size, qk_layernorm=True, use_cache=False, tie_word_embeddings=False)
    return PhiConfig.from_dict(d)


class ShowoTransformer(nn.Module):
    """Show-o's `Showo` module as far as t2i needs it: the Phi model under the attribute `showo` (so released
    state-dict keys `showo.model.…` / `showo.lm_head.…` load as they are)."""

    def __init__(self, phi_config: Any):
        super().__init__()
        from transformers import PhiForCausalLM

        self.showo = PhiForCausalLM(phi_config)


class ShowoPolicy(nn.Module):
    """`MaskedPolicy` over Show-o: `tokens` use codes 0..K−1 and `mask_id` = K; Show-o's ids stay inside."""

    def __init__(self, transformer: ShowoTransformer, vq: MagvitV2, tokenizer: Any, config: ShowoConfig):
        super().__init__()
        self.transformer = transformer
        self.vq = vq.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.config = config
        self.layout = config.layout
        phi_vocab = transformer.showo.config.vocab_size
        if phi_vocab != config.vocab_size:
            raise ValueError(f"Phi vocab_size {phi_vocab} ≠ Show-o vocab_size {config.vocab_size}")
        if vq.codebook_size != config.codebook_size:
            raise ValueError(f"MAGVIT-v2 codebook {vq.codebook_size} ≠ Show-o codebook_size {config.codebook_size}")
        if len(tokenizer) > config.llm_vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but Show-o's text vocabulary is {config.llm_vocab_size}: pass "
                "the base Phi tokenizer (without Show-o's added special tokens)"
            )
        if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs bos and eos tokens (Show-o's <|sot|> and <|eot|>)")
        self.mask_id: int = config.codebook_size
        self.codebook_size: int = config.codebook_size
        self.grid: tuple[int, int] = config.grid

    @property
    def text_len(self) -> int:
        """T = max_text_len + 1 (the <|t2i|> task token, bos, text, eos, left padding)."""
        return self.config.max_text_len + 1

    def _device(self) -> torch.device:
        return self.transformer.showo.lm_head.weight.device

    def text_ids(self, prompt: str) -> list[int]:
        """One prompt's text block (length T), as Show-o's `t2i_gen_prompt` builds it."""
        bos, eos, t = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id, self.text_len
        ids = list(self.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"])
        if not ids or ids[0] != bos:
            ids = [bos] + ids
        ids = [self.layout.t2i_id] + ids + [eos]
        if len(ids) <= t:
            return [self.layout.pad_id] * (t - len(ids)) + ids
        return ids[: t - 1] + [eos]

    def encode(self, prompts: Sequence[str]) -> Cond:
        """{"text_ids": (B, T)}; "" gives Show-o's unconditional input `[PAD]… <|t2i|> bos eos`."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a sequence of prompts, not a single string")
        ids = torch.tensor([self.text_ids(p) for p in prompts], dtype=torch.long, device=self._device())
        return {"text_ids": ids.reshape(len(prompts), self.text_len)}

    def input_ids(self, tokens: Tensor, cond: Cond) -> Tensor:
        """The full sequence (B, T + N + 2): text block, <|soi|>, image ids (mask → Show-o's mask id), <|eoi|>."""
        b, n = tokens.shape
        if n != self.config.num_vq_tokens:
            raise ValueError(f"tokens hold {n} positions, this Show-o expects {self.config.num_vq_tokens}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > self.mask_id):
            raise ValueError(f"tokens must lie in [0, {self.codebook_size}) or equal mask_id={self.mask_id}")
        text = cond["text_ids"].to(tokens.device)
        if text.shape != (b, self.text_len):
            raise ValueError(f"cond text_ids has shape {tuple(text.shape)}, expected ({b}, {self.text_len})")
        lay = self.layout
        image = torch.where(tokens == self.mask_id, lay.mask_token_id, tokens + lay.image_offset)
        soi = torch.full((b, 1), lay.soi_id, dtype=torch.long, device=tokens.device)
        eoi = torch.full((b, 1), lay.eoi_id, dtype=torch.long, device=tokens.device)
        return torch.cat([text, soi, image.long(), eoi], dim=1)

    def attention_mask(self, input_ids: Tensor) -> Tensor:
        lay = self.layout
        allowed = omni_attention_mask(input_ids, lay.pad_id, lay.soi_id, lay.eoi_id)
        return additive_mask(allowed, self.transformer.showo.lm_head.weight.dtype)

    def logits(self, tokens: Tensor, cond: Cond) -> Tensor:
        """Scores (B, N, K), float32: the LM head's image-code rows at the image positions."""
        phi = self.transformer.showo
        ids = self.input_ids(tokens, cond)
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        hidden = phi.model(
            input_ids=ids, attention_mask=self.attention_mask(ids), position_ids=positions, use_cache=False
        ).last_hidden_state
        start, n = self.text_len + 1, tokens.shape[1]
        codes = slice(self.layout.image_offset, self.layout.image_offset + self.codebook_size)
        bias = phi.lm_head.bias[codes] if phi.lm_head.bias is not None else None
        return F.linear(hidden[:, start : start + n], phi.lm_head.weight[codes], bias).float()

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1]: MAGVIT-v2 decoder, then clamp((x + 1)/2) as `inference_t2i.py` does."""
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise ValueError(f"decode needs complete grids with codes in [0, {self.codebook_size}) (no mask tokens)")
        pixels = self.vq.decode_codes(tokens.to(self.vq.decoder.conv_in.weight.device), self.grid)
        return ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] → codes (B, N) (MAGVIT-v2 encoder on [−1, 1] inputs)."""
        return self.vq.encode_codes(images.to(self.vq.decoder.conv_in.weight.dtype) * 2.0 - 1.0)

    def trainable(self) -> nn.Module:
        """The Phi model (`PhiForCausalLM`); MAGVIT-v2 and the tokenizer stay frozen."""
        return self.transformer.showo

    def save_pretrained(
        self,
        showo_dir: str | Path,
        vq_dir: str | Path,
        llm_dir: str | Path | None = None,
        *,
        weights_name: str = "pytorch_model.safetensors",
    ) -> None:
        """Write the released layouts: `showo_dir` (config.json + `showo.`-prefixed weights), `vq_dir` (MAGVIT-v2),
        and optionally `llm_dir` standing in for a local `microsoft/phi-1_5` (its tokenizer and Phi config.json)."""
        out = Path(showo_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(self.config.to_json_dict(), indent=2))
        save_state_dict(self.transformer.state_dict(), out / weights_name)
        self.vq.save_pretrained(vq_dir, weights_name=weights_name)
        if llm_dir is not None:
            self.tokenizer.save_pretrained(str(llm_dir))
            self.transformer.showo.config.to_json_file(str(Path(llm_dir) / "config.json"))


def resolve_phi_config(llm_config: Any, tokenizer_dir: Path | None) -> Any:
    """The base Phi config: `llm_config` (a PhiConfig or a directory with config.json), else `tokenizer_dir/config.json`
    when it is a Phi config (a local `microsoft/phi-1_5` holds both), else transformers' `PhiConfig()` defaults, which
    the transformers docs give as the Phi-1 architecture that Phi-1.5 shares; shapes are checked against the weights."""
    from transformers import PhiConfig

    if isinstance(llm_config, PhiConfig):
        return llm_config
    if llm_config is not None:
        path = Path(llm_config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"llm_config {path} not found: point it at a local microsoft/phi-1_5 directory")
        return PhiConfig.from_json_file(str(path))
    if tokenizer_dir is not None and (tokenizer_dir / "config.json").is_file():
        d = json.loads((tokenizer_dir / "config.json").read_text())
        if d.get("model_type") == "phi":
            return PhiConfig.from_json_file(str(tokenizer_dir / "config.json"))
    return PhiConfig()


def check_phi_shapes(phi_config: Any, state: dict[str, Tensor]) -> None:
    """Compare width, depth, MLP size, heads (from the QK-LayerNorm size) and vocabulary with the checkpoint."""
    def need(key: str) -> Tensor:
        if key not in state:
            raise KeyError(f"checkpoint lacks {key}: not a Show-o (showo.-prefixed Phi) state dict")
        return state[key]

    vocab, hidden = need("showo.model.embed_tokens.weight").shape
    inter = need("showo.model.layers.0.mlp.fc1.weight").shape[0]
    head_dim = need("showo.model.layers.0.self_attn.q_layernorm.weight").shape[0]
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("showo.model.layers."))
    found = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                 num_attention_heads=hidden // head_dim)
    bad = {k: (getattr(phi_config, k), v) for k, v in found.items() if getattr(phi_config, k) != v}
    if bad:
        detail = ", ".join(f"{k}: config {a} vs weights {b}" for k, (a, b) in bad.items())
        raise ValueError(
            f"Phi config does not match the Show-o weights ({detail}); pass llm_config= (or tokenizer_dir=) pointing at "
            "a local copy of the LLM the checkpoint was built on (microsoft/phi-1_5 for Show-o)"
        )


def _load_tokenizer(tokenizer_dir: Path | None, showo_dir: Path) -> Any:
    from transformers import AutoTokenizer

    candidates = [tokenizer_dir] if tokenizer_dir is not None else [showo_dir]
    for d in candidates:
        if any((d / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(str(d))
    where = tokenizer_dir if tokenizer_dir is not None else showo_dir
    raise FileNotFoundError(
        f"no tokenizer in {where} (tokenizer.json / vocab.json / tokenizer_config.json): Show-o uses the Phi-1.5 "
        "tokenizer; download microsoft/phi-1_5 and pass its directory as tokenizer_dir"
    )


def from_pretrained(
    showo_dir: str | Path,
    vq_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    *,
    llm_config: Any = None,
    num_vq_tokens: int | None = None,
    max_text_len: int = 128,
    vq_config: MagvitV2Config | None = None,
    dtype: torch.dtype | None = None,
) -> ShowoPolicy:
    """Load Show-o from local copies of `showlab/show-o-512x512` (`showo_dir`), `showlab/magvitv2` (`vq_dir`) and
    `microsoft/phi-1_5` (`tokenizer_dir`: its tokenizer and, if present, its config.json; defaults to `showo_dir`).

    `num_vq_tokens` overrides config.json's value (1024 for 512×512, per `configs/showo_demo_512x512.yaml`);
    `max_text_len` is the yaml's `max_seq_length` (128). `mm_projector.*` weights (CLIP-ViT variants) are ignored:
    text-to-image does not use them.
    """
    sdir = Path(showo_dir)
    cfg_path, raw = read_config_json(sdir, "showlab/show-o-512x512")
    missing = [k for k in ("vocab_size", "llm_vocab_size") if k not in raw]
    if missing:
        raise KeyError(f"{cfg_path} lacks {missing}: not a Show-o config.json")
    config = ShowoConfig(
        vocab_size=int(raw["vocab_size"]),
        llm_vocab_size=int(raw["llm_vocab_size"]),
        codebook_size=int(raw.get("codebook_size", 8192)),
        num_vq_tokens=int(num_vq_tokens if num_vq_tokens is not None else raw.get("num_vq_tokens", 1024)),
        max_text_len=max_text_len,
    )
    if "mask_token_id" in raw and int(raw["mask_token_id"]) != config.layout.mask_token_id:
        raise ValueError(f"{cfg_path}: mask_token_id {raw['mask_token_id']} ≠ vocab_size − 1 = {config.layout.mask_token_id}")
    if "num_new_special_tokens" in raw and int(raw["num_new_special_tokens"]) != len(SPECIAL_TOKENS):
        raise ValueError(f"{cfg_path}: num_new_special_tokens {raw['num_new_special_tokens']} ≠ {len(SPECIAL_TOKENS)}")

    state = load_state_dict_file(find_weights(sdir, "showlab/show-o-512x512"))
    state = {k: v for k, v in state.items() if not k.startswith("mm_projector.")}
    tdir = Path(tokenizer_dir) if tokenizer_dir is not None else None
    phi_config = phi_config_for_showo(resolve_phi_config(llm_config, tdir), config.vocab_size)
    check_phi_shapes(phi_config, state)
    transformer = ShowoTransformer(phi_config)
    try:
        transformer.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"{sdir}: weights do not match the Show-o module: {e}") from e
    policy = ShowoPolicy(transformer, load_magvitv2(vq_dir, vq_config), _load_tokenizer(tdir, sdir), config)
    if dtype is not None:
        policy.to(dtype)
    return policy.eval()


def tiny_showo_policy(
    *,
    codebook_bits: int = 4,
    grid_side: int = 4,
    max_text_len: int = 12,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> ShowoPolicy:
    """A randomly initialised Show-o of tiny sizes for tests (offline tokenizer from `shared.tiny`, no downloads).

    Image side in pixels = 2 · grid_side (one MAGVIT-v2 downsampling level, 32 channels).
    """
    from shared.tiny import tiny_tokenizer
    from transformers import PhiConfig

    tokenizer = tiny_tokenizer()
    k = 2**codebook_bits
    llm_vocab = len(tokenizer)
    config = ShowoConfig(
        vocab_size=llm_vocab + len(SPECIAL_TOKENS) + k + 1, llm_vocab_size=llm_vocab, codebook_size=k,
        num_vq_tokens=grid_side * grid_side, max_text_len=max_text_len,
    )
    base = PhiConfig(
        vocab_size=config.vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=2 * (config.max_text_len + config.num_vq_tokens + 2),
        partial_rotary_factor=0.5, rope_theta=10000.0,
    )
    torch.manual_seed(seed)
    transformer = ShowoTransformer(phi_config_for_showo(base, config.vocab_size))
    vq = MagvitV2(MagvitV2Config(
        ch=32, encoder_ch_mult=(1, 1), encoder_num_res_blocks=(1, 1), decoder_ch_mult=(1, 1),
        decoder_num_res_blocks=(1, 1), attn_resolutions=(), resolution=2 * grid_side, z_channels=codebook_bits,
    ))
    return ShowoPolicy(transformer, vq, tokenizer, config).eval()
