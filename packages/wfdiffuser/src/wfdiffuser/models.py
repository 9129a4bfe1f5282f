"""The three planners on one code path: WFDiffuser, Decision Diffuser and Diffuser-style (card §3, §7).

Everything but the representation is shared: data, normaliser, temporal U-Net, embeddings, cosine DDPM, samplers,
return classifier-free guidance, in-painting of the current state and evaluation.

* ``wfdiffuser``  states → DWT bands (``haar_pad1`` one level as the public code, or any pywt wavelet/levels/mode);
                  one U-Net per band; a cross-band conditioner (``state_embedding``: the public code's MLP of s_0;
                  ``stft_xattn``: our STFT + cross attention on the noisy bands, card §4; ``none``); the band-weighted
                  loss; inverse dynamics a_t = f(s_t, s_{t+1}).
* ``dd``          Decision Diffuser: one U-Net on the states, inverse dynamics.
* ``diffuser``    Diffuser-style: one U-Net on [actions, states] (H × (d_a + d_s)), ``action_weight`` on a_0, the
                  action read off the plan. Ours: conditioned by return CFG like the others (Janner's value-gradient
                  guidance is not implemented), so the comparison isolates the representation.

Band embedding (per band, concatenated, added in every residual block): [time emb e, return emb e (zeroed when
dropped), cross-band feature]. Loss (card §3): per-band MSE of ε with weight 0 on in-painted entries, bands combined
by ``band_loss`` (``self_weighted``: K·ΣL_k²/ΣL_k, the public code's 2(L_L² + L_H²)/(L_L + L_H) for K = 2; ``sum``),
total ½(L_diff + L_inv) with inverse dynamics, L_diff without.

Sampling clips x̂_0 (``clip``): ``range`` (default, ours) to the range each band entry can take when the normalised
states lie in [−1, 1] (±√2 in a Haar low band, ±1 for states); ``unit`` to ±1 in every band, as the public code does,
which clips the Haar low band wherever |s_t + s_{t+1}| > √2; ``none``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wfdiffuser.conditioner import StateEmbeddingConditioner, STFTCrossAttentionConditioner
from wfdiffuser.diffusion import Diffusion
from wfdiffuser.embeddings import ReturnEmbedding, TimeEmbedding
from wfdiffuser.unet import TemporalUnet
from wfdiffuser.wavelets import DWT1d, check_horizon

__all__ = ["BAND_LOSSES", "CLIPS", "CONDITIONERS", "KINDS", "ModelSpec", "TrajectoryDiffuser", "band_lengths"]

KINDS = ("wfdiffuser", "dd", "diffuser")
CONDITIONERS = ("state_embedding", "stft_xattn", "none")
CLIPS = ("range", "unit", "none")
BAND_LOSSES = ("self_weighted", "sum")


@dataclass
class ModelSpec:
    """Architecture of a planner (the config's ``model`` section maps onto it)."""

    kind: str = "wfdiffuser"
    obs_dim: int = 3
    act_dim: int = 1
    horizon: int = 30
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4)
    emb: int = 32
    kernel_size: int = 5
    groups: int = 8
    wavelet: str = "haar"
    levels: int = 1
    mode: str = "haar_pad1"
    conditioner: str = "state_embedding"
    cond_dim: int = 32
    cond_hidden: int = 128
    stft_n_fft: int = 8
    stft_hop: int = 2
    drop_cross_in_uncond: bool = False
    returns_condition: bool = True
    inv_hidden: int = 256
    action_weight: float = 10.0
    band_loss: str = "self_weighted"
    diffusion_steps: int = 20
    clip: str = "range"

    def __post_init__(self) -> None:
        self.dim_mults = tuple(self.dim_mults)
        for name, value, choices in (("kind", self.kind, KINDS), ("conditioner", self.conditioner, CONDITIONERS),
                                     ("band_loss", self.band_loss, BAND_LOSSES), ("clip", self.clip, CLIPS)):
            if value not in choices:
                raise ValueError(f"model.{name} must be one of {choices}, got {value!r}")


def band_lengths(spec: ModelSpec) -> list[int]:
    """Sequence lengths the U-Nets see; ValueError naming the nearest valid horizon when they cannot downsample
    ``len(dim_mults) − 1`` times with matching skips (card §5: H ≡ 6 mod 8 for haar_pad1 and three levels)."""
    factor = 2 ** (len(spec.dim_mults) - 1)
    if spec.kind == "wfdiffuser":
        return check_horizon(spec.horizon, DWT1d(spec.wavelet, spec.levels, spec.mode), factor)
    if spec.horizon < factor or spec.horizon % factor:
        low = spec.horizon // factor * factor
        near = " or ".join(str(h) for h in (low, low + factor) if h >= factor)
        raise ValueError(f"horizon={spec.horizon} must be a multiple of {factor} = 2**(len(dim_mults) - 1) for "
                         f"model.kind={spec.kind}; nearest valid horizon: {near}")
    return [spec.horizon]


def coefficient_bounds(dwt: DWT1d, horizon: int) -> list[Tensor]:
    """Largest |coefficient| of each band entry over all windows with states in [−1, 1], shape (L_k, 1) per band.

    The DWT is linear, c = A·s, so max_{|s| ≤ 1} |c_i| = Σ_j |A_ij| (the L1 norm of row i). For one Haar level the
    low band reaches ±√2 (s_t = s_{t+1} = ±1), which is why clipping every band at ±1 as the public code does cuts off
    plans through states near the normaliser's limits (ours, card §3 "Planning").
    """
    eye = torch.eye(horizon)[:, :, None]  # impulse j at time j, one channel
    with torch.no_grad():
        return [b.abs().sum(0) for b in dwt(eye)]


class _BandDenoiser(nn.Module):
    """ε_θ for one band: its own time and return embeddings and temporal U-Net (the public code's model_low/high)."""

    def __init__(self, channels: int, spec: ModelSpec, cross_dim: int) -> None:
        super().__init__()
        self.time = TimeEmbedding(spec.emb)
        self.ret = ReturnEmbedding(spec.emb) if spec.returns_condition else None
        emb_dim = spec.emb * (2 if spec.returns_condition else 1) + cross_dim
        self.unet = TemporalUnet(channels, dim=spec.dim, dim_mults=spec.dim_mults, emb_dim=emb_dim,
                                 kernel_size=spec.kernel_size, groups=spec.groups)

    def forward(self, x: Tensor, t: Tensor, returns: Tensor | None, drop: Tensor | None, cross: Tensor | None) -> Tensor:
        parts = [self.time(t)]
        if self.ret is not None:
            parts.append(self.ret(returns, drop))
        if cross is not None:
            parts.append(cross)
        return self.unet(x, torch.cat(parts, dim=-1))


class TrajectoryDiffuser(nn.Module):
    """One planner of ``spec.kind``; inputs and outputs are in normalised units."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        s = spec
        self.diffusion = Diffusion(s.diffusion_steps, clip=0.0 if s.clip == "none" else 1.0)
        self.dwt = DWT1d(s.wavelet, s.levels, s.mode) if s.kind == "wfdiffuser" else None
        self._clip_bounds = coefficient_bounds(self.dwt, s.horizon) if self.dwt is not None and s.clip == "range" \
            else None
        self.channels = s.obs_dim + s.act_dim if s.kind == "diffuser" else s.obs_dim
        self.band_lengths = band_lengths(s)
        n_bands = len(self.band_lengths)

        self.conditioner: nn.Module | None = None
        cross_dim = 0
        if s.kind == "wfdiffuser" and s.conditioner == "state_embedding":
            if n_bands != 2:
                raise ValueError(f"model.conditioner=state_embedding needs exactly 2 bands (one level), got {n_bands}; "
                                 "use model.conditioner=stft_xattn or none for more levels")
            self.conditioner = StateEmbeddingConditioner(s.obs_dim, dim=s.cond_dim, hidden=s.cond_hidden)
        elif s.kind == "wfdiffuser" and s.conditioner == "stft_xattn":
            self.conditioner = STFTCrossAttentionConditioner(s.obs_dim, self.band_lengths, dim=s.cond_dim,
                                                             n_fft=s.stft_n_fft, hop=s.stft_hop, n_bands=n_bands)
        if self.conditioner is not None:
            cross_dim = self.conditioner.out_dim
        self.bands = nn.ModuleList(_BandDenoiser(self.channels, s, cross_dim) for _ in range(n_bands))
        self.inv_dyn = None
        if s.kind != "diffuser":
            self.inv_dyn = nn.Sequential(nn.Linear(2 * s.obs_dim, s.inv_hidden), nn.ReLU(),
                                         nn.Linear(s.inv_hidden, s.inv_hidden), nn.ReLU(),
                                         nn.Linear(s.inv_hidden, s.act_dim))

    # --- representation ---------------------------------------------------------------------------------------------
    def encode(self, states: Tensor, actions: Tensor | None = None) -> list[Tensor]:
        """x_0 bands of a window: DWT of the states, the states, or [actions, states]."""
        if self.dwt is not None:
            return self.dwt(states)
        if self.spec.kind == "diffuser":
            return [torch.cat([actions, states], dim=-1)]
        return [states]

    def decode(self, bands: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """(states (B, H, d_s), actions (B, H, d_a) or None) of sampled bands."""
        if self.dwt is not None:
            return self.dwt.inverse(bands, self.spec.horizon), None
        if self.spec.kind == "diffuser":
            x = bands[0]
            return x[..., self.spec.act_dim:], x[..., : self.spec.act_dim]
        return bands[0], None

    def inpaint(self, bands: list[Tensor], s0: Tensor) -> list[Tensor]:
        """Write the current state s_0 (B, d_s) into the bands.

        ``haar_pad1``: coefficient 0 of the two bands is (s_0/√2, −s_0/√2) (card §3), exact. Other transforms: the
        bands are projected (inverse DWT, set s_0, DWT again; ours). ``dd``: states[0] = s_0; ``diffuser``: the state
        channels of step 0.
        """
        out = [b.clone() for b in bands]
        if self.dwt is not None and self.spec.mode == "haar_pad1" and self.spec.levels == 1:
            out[0][:, 0] = s0 / math.sqrt(2)
            out[1][:, 0] = -s0 / math.sqrt(2)
        elif self.dwt is not None:
            states = self.dwt.inverse(out, self.spec.horizon)
            states = torch.cat([s0[:, None], states[:, 1:]], dim=1)
            out = self.dwt(states)
        elif self.spec.kind == "diffuser":
            out[0][:, 0, self.spec.act_dim:] = s0
        else:
            out[0][:, 0] = s0
        return out

    def _known_masks(self, bands: list[Tensor]) -> list[Tensor]:
        """1 where an entry is in-painted (no loss, no noise), per band, shape (1, L_k, C)."""
        masks = [torch.zeros(1, *b.shape[1:], dtype=torch.bool, device=b.device) for b in bands]
        if self.dwt is not None:
            if self.spec.mode == "haar_pad1" and self.spec.levels == 1:
                masks[0][:, 0] = True
                masks[1][:, 0] = True
        elif self.spec.kind == "diffuser":
            masks[0][:, 0, self.spec.act_dim:] = True
        else:
            masks[0][:, 0] = True
        return masks

    # --- ε prediction -------------------------------------------------------------------------------------------------
    def _cross(self, bands: list[Tensor], s0: Tensor) -> list[Tensor | None]:
        if self.conditioner is None:
            return [None] * len(bands)
        if isinstance(self.conditioner, StateEmbeddingConditioner):
            return list(self.conditioner(s0))
        return list(self.conditioner(bands))

    def eps(self, bands: list[Tensor], t: Tensor, returns: Tensor | None, drop: Tensor | None,
            s0: Tensor, *, stacked: tuple[dict, dict] | None = None) -> list[Tensor]:
        """ε_θ of every band (same t); ``drop`` (B,) bool zeroes the return embedding (∅).

        ``stacked`` (from :meth:`stack_bands`) runs all band denoisers in one vmapped forward (equal band lengths).
        """
        cross = self._cross(bands, s0)
        if drop is not None and self.spec.drop_cross_in_uncond and cross[0] is not None:
            keep = (~drop).to(bands[0].dtype)[:, None]
            cross = [c * keep for c in cross]
        if stacked is not None:
            return list(_vmapped_bands(self, stacked, bands, t, returns, drop, cross))
        return [net(x, t, returns, drop, c) for net, x, c in zip(self.bands, bands, cross)]

    def stack_bands(self) -> tuple[dict, dict] | None:
        """Stacked parameters of the band denoisers for one vmapped forward, or None when bands differ in length."""
        if len(self.bands) < 2 or len(set(self.band_lengths)) != 1:
            return None
        from torch.func import stack_module_state

        return stack_module_state(list(self.bands))

    # --- training -----------------------------------------------------------------------------------------------------
    def loss(self, states: Tensor, actions: Tensor, returns: Tensor, mask: Tensor | None = None, *,
             p_drop: float = 0.25, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """½(L_diff + L_inv) (or L_diff) on a batch of normalised windows; returns the parts for logging."""
        b = states.shape[0]
        dev = states.device
        x0 = self.encode(states, actions)
        known = self._known_masks(x0)
        t = torch.randint(0, self.diffusion.steps, (b,), device=dev, generator=generator)
        noise = [torch.randn(x.shape, device=dev, generator=generator).masked_fill(k, 0.0) for x, k in zip(x0, known)]
        xt = self.inpaint([self.diffusion.q_sample(x, t, n) for x, n in zip(x0, noise)], states[:, 0])
        drop = None
        if self.spec.returns_condition:
            drop = torch.rand(b, device=dev, generator=generator) < p_drop
        pred = self.eps(xt, t, returns, drop, states[:, 0])
        band_losses = []
        for p, n, k in zip(pred, noise, known):
            w = (~k).to(p.dtype).expand_as(p).clone()
            if self.spec.kind == "diffuser":
                w[:, 0, : self.spec.act_dim] = self.spec.action_weight
            band_losses.append(((p - n) ** 2 * w).sum() / w.sum())
        stacked = torch.stack(band_losses)
        if self.spec.band_loss == "self_weighted":
            diff = len(band_losses) * (stacked ** 2).sum() / stacked.sum().clamp_min(1e-12)
        else:
            diff = stacked.sum()
        out = {"loss_diff": diff, **{f"loss_band{i}": v.detach() for i, v in enumerate(band_losses)}}
        if self.inv_dyn is None:
            out["loss"] = diff
            return out
        pairs = torch.cat([states[:, :-1], states[:, 1:]], dim=-1)
        err = ((self.inv_dyn(pairs) - actions[:, :-1]) ** 2).mean(-1)
        if mask is not None:
            valid = (mask[:, :-1] & mask[:, 1:]).to(err.dtype)
            inv = (err * valid).sum() / valid.sum().clamp_min(1.0)
        else:
            inv = err.mean()
        out.update(loss=0.5 * (diff + inv), loss_inv=inv)
        return out

    # --- planning -----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def plan(self, s0: Tensor, target: float | Tensor = 1.0, *, guidance: float = 1.2, sampler: str = "ddpm",
             sample_steps: int | None = None, temperature: float = 0.5, generator: torch.Generator | None = None,
             batch_cfg: bool = True, batch_bands: bool = False) -> tuple[Tensor, Tensor | None]:
        """Sample plans from the current states s0 (B, d_s); returns (states, actions or None), normalised.

        Guidance w: 0 = unconditional, 1 = conditional, otherwise ε(∅) + w(ε(y) − ε(∅)), both passes in one batched
        forward (``batch_cfg``; False = two forwards, as the public code). ``batch_bands`` runs the band U-Nets in
        one vmapped forward. ``target`` is the return label (1.0 = the best return in the data under ``minmax``).
        """
        b = s0.shape[0]
        dev = s0.device
        returns = None
        if self.spec.returns_condition:
            returns = torch.as_tensor(target, dtype=s0.dtype, device=dev).reshape(-1, 1).expand(b, 1)
        stacked = self.stack_bands() if batch_bands else None
        cond = torch.zeros(b, dtype=torch.bool, device=dev)

        def denoise(x: list[Tensor], t: Tensor) -> list[Tensor]:
            if returns is None:
                return self.eps(x, t, None, None, s0, stacked=stacked)
            if guidance == 1.0:
                return self.eps(x, t, returns, cond, s0, stacked=stacked)
            if guidance == 0.0:
                return self.eps(x, t, returns, ~cond, s0, stacked=stacked)
            if batch_cfg:
                return _guided(self, x, t, returns, s0, guidance, stacked)
            e_c = self.eps(x, t, returns, cond, s0, stacked=stacked)
            e_u = self.eps(x, t, returns, ~cond, s0, stacked=stacked)
            return [u + guidance * (c - u) for c, u in zip(e_c, e_u)]

        shapes = [(b, length, self.channels) for length in self.band_lengths]
        bounds = [bd.to(device=dev, dtype=s0.dtype) for bd in self._clip_bounds] if self._clip_bounds else None
        bands = self.diffusion.sample(denoise, shapes, inpaint=lambda x: self.inpaint(x, s0), sampler=sampler,
                                      sample_steps=sample_steps, temperature=temperature, generator=generator,
                                      device=dev, bounds=bounds)
        return self.decode(bands)

    @torch.no_grad()
    def act(self, s0: Tensor, **plan_kwargs) -> tuple[Tensor, Tensor]:
        """(first action, planned states) of a fresh plan, normalised: a_0 = f(ŝ_0, ŝ_1) or the plan's a_0."""
        states, actions = self.plan(s0, **plan_kwargs)
        if self.inv_dyn is None:
            return actions[:, 0], states
        return self.inv_dyn(torch.cat([states[:, 0], states[:, 1]], dim=-1)), states


def _vmapped_bands(model: TrajectoryDiffuser, stacked: tuple[dict, dict], bands: list[Tensor], t: Tensor,
                   returns: Tensor | None, drop: Tensor | None, cross: list[Tensor | None]) -> Tensor:
    """All band denoisers in one forward: torch.func.vmap over their stacked parameters (equal band shapes)."""
    from torch.func import functional_call, vmap

    params, buffers = stacked
    base = model.bands[0]
    xs = torch.stack(bands)
    cs = torch.stack(cross) if cross[0] is not None else None

    def one(p: dict, bf: dict, x: Tensor, c: Tensor | None) -> Tensor:
        return functional_call(base, (p, bf), (x, t, returns, drop, c))

    return vmap(one, in_dims=(0, 0, 0, 0 if cs is not None else None), randomness="same")(params, buffers, xs, cs)


def _guided(model: TrajectoryDiffuser, x: list[Tensor], t: Tensor, returns: Tensor, s0: Tensor,
            w: float, stacked: tuple[dict, dict] | None = None) -> list[Tensor]:
    """ε(∅) + w·(ε(y) − ε(∅)), conditional and unconditional halves in one forward of each band."""
    b = x[0].shape[0]
    drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x[0].device)
    both = model.eps([torch.cat([xk, xk]) for xk in x], torch.cat([t, t]), torch.cat([returns, returns]), drop,
                     torch.cat([s0, s0]), stacked=stacked)
    return [e[b:] + w * (e[:b] - e[b:]) for e in both]
