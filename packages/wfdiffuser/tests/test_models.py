"""The three planners: representation round trips, in-painting through sampling, CFG limits, the band loss."""

from __future__ import annotations

import math

import pytest
import torch

from wfdiffuser.models import ModelSpec, TrajectoryDiffuser, _guided

OBS, ACT, H = 3, 2, 14  # haar_pad1: bands of 8 = 2·4 → dim_mults (1, 2) downsample once


def _model(kind: str = "wfdiffuser", **kw) -> TrajectoryDiffuser:
    torch.manual_seed(0)
    spec = dict(kind=kind, obs_dim=OBS, act_dim=ACT, horizon=H if kind == "wfdiffuser" else 16, dim=8,
                dim_mults=(1, 2), emb=8, groups=4, cond_dim=8, cond_hidden=16, inv_hidden=16, diffusion_steps=6,
                stft_n_fft=4, stft_hop=2)
    spec.update(kw)
    return TrajectoryDiffuser(ModelSpec(**spec))


def _window(model: TrajectoryDiffuser, b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    h = model.spec.horizon
    return torch.randn(b, h, OBS, generator=g).clamp(-1, 1), torch.randn(b, h, ACT, generator=g).clamp(-1, 1)


@pytest.mark.parametrize("kind,kw", [("wfdiffuser", {}), ("wfdiffuser", {"conditioner": "stft_xattn"}),
                                     ("wfdiffuser", {"mode": "periodization", "wavelet": "db2", "levels": 2,
                                                     "conditioner": "none", "horizon": 16}),
                                     ("dd", {}), ("diffuser", {})])
def test_encode_decode_round_trip_and_inpainting_through_sampling(kind: str, kw: dict) -> None:
    model = _model(kind, **kw)
    states, actions = _window(model)
    dec_s, dec_a = model.decode(model.encode(states, actions))
    assert torch.allclose(dec_s, states, atol=1e-5)
    if kind == "diffuser":
        assert torch.allclose(dec_a, actions, atol=1e-6)
    s0 = states[:, 0]
    for sampler in ("ddpm", "ddim"):
        plan_s, plan_a = model.plan(s0, sampler=sampler, sample_steps=3, generator=torch.Generator().manual_seed(0))
        assert plan_s.shape == states.shape
        assert torch.allclose(plan_s[:, 0], s0, atol=1e-5), sampler
        assert (plan_a is None) == (kind != "diffuser")
    a0, _ = model.act(s0, sampler="ddim", sample_steps=2)
    assert a0.shape == (4, ACT)


def test_haar_pad1_inpainting_writes_the_current_state_pair() -> None:
    model = _model()
    states, _ = _window(model)
    bands = model.encode(states)
    s0 = states[:, 0]
    # the first coefficient pair of the DWT of a window is (s0/√2, −s0/√2) (card §3); in-painting writes the same
    assert torch.allclose(bands[0][:, 0], s0 / math.sqrt(2), atol=1e-6)
    assert torch.allclose(bands[1][:, 0], -s0 / math.sqrt(2), atol=1e-6)
    noise = [torch.randn_like(b) for b in bands]
    painted = model.inpaint(noise, s0)
    assert torch.allclose(painted[0][:, 0], bands[0][:, 0]) and torch.allclose(painted[1][:, 0], bands[1][:, 0])
    assert torch.equal(painted[0][:, 1:], noise[0][:, 1:])


@pytest.mark.parametrize("kind", ["wfdiffuser", "dd", "diffuser"])
def test_cfg_w0_and_w1_are_the_unconditional_and_conditional_passes(kind: str) -> None:
    model = _model(kind).eval()
    states, actions = _window(model)
    x = [torch.randn_like(b) for b in model.encode(states, actions)]
    t = torch.tensor([5, 3, 1, 0])
    returns = torch.tensor([[0.1], [0.5], [0.9], [1.0]])
    s0 = states[:, 0]
    cond = model.eps(x, t, returns, torch.zeros(4, dtype=torch.bool), s0)
    uncond = model.eps(x, t, returns, torch.ones(4, dtype=torch.bool), s0)
    assert not torch.allclose(cond[0], uncond[0])  # the return label matters
    for w, ref in ((0.0, uncond), (1.0, cond)):
        out = _guided(model, x, t, returns, s0, w)  # the batched two-pass path
        assert all(torch.allclose(o, r, atol=1e-5) for o, r in zip(out, ref))
    mix = _guided(model, x, t, returns, s0, 1.2)
    assert all(torch.allclose(m, u + 1.2 * (c - u), atol=1e-5) for m, u, c in zip(mix, uncond, cond))


def test_unconditional_model_ignores_the_target() -> None:
    model = _model(returns_condition=False).eval()
    s0 = _window(model)[0][:, 0]
    a = model.plan(s0, target=0.0, sampler="ddim", sample_steps=3, generator=torch.Generator().manual_seed(0))[0]
    b = model.plan(s0, target=1.0, sampler="ddim", sample_steps=3, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(a, b)


def test_band_loss_combination_and_masks() -> None:
    model = _model()
    states, actions = _window(model)
    returns = torch.rand(4, 1)
    out = model.loss(states, actions, returns, generator=torch.Generator().manual_seed(0))
    lo, hi = out["loss_band0"], out["loss_band1"]
    assert out["loss_diff"].item() == pytest.approx((2 * (lo**2 + hi**2) / (lo + hi)).item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * (out["loss_diff"] + out["loss_inv"]).item(), rel=1e-5)
    summed = _model(band_loss="sum").loss(states, actions, returns, generator=torch.Generator().manual_seed(0))
    assert summed["loss_diff"].item() == pytest.approx((summed["loss_band0"] + summed["loss_band1"]).item(), rel=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.inv_dyn.parameters())
    # the in-painted entries carry no loss: their target noise is zeroed and their weight is 0
    masks = model._known_masks(model.encode(states))
    assert masks[0][0, 0].all() and masks[1][0, 0].all() and not masks[0][0, 1:].any()
    # inverse-dynamics loss ignores padded steps
    mask = torch.ones(4, H, dtype=torch.bool)
    mask[:, -3:] = False
    masked = model.loss(states, actions, returns, mask, generator=torch.Generator().manual_seed(0))
    assert masked["loss_inv"].item() != pytest.approx(out["loss_inv"].item())


def test_diffuser_is_weighted_on_the_first_action() -> None:
    model = _model("diffuser")
    masks = model._known_masks(model.encode(*_window(model)))
    assert masks[0][0, 0, ACT:].all() and not masks[0][0, 0, :ACT].any()
    states, actions = _window(model)
    a = _model("diffuser", action_weight=1.0).loss(states, actions, torch.rand(4, 1),
                                                   generator=torch.Generator().manual_seed(0))["loss"]
    b = _model("diffuser", action_weight=50.0).loss(states, actions, torch.rand(4, 1),
                                                    generator=torch.Generator().manual_seed(0))["loss"]
    assert a.item() != pytest.approx(b.item())


def test_bad_horizons_and_options_name_the_fix() -> None:
    with pytest.raises(ValueError, match="nearest valid horizon"):
        _model(horizon=16)  # haar_pad1: 9 coefficients per band
    with pytest.raises(ValueError, match="nearest valid horizon: 16 or 18"):
        _model("dd", horizon=17)
    with pytest.raises(ValueError, match="model.kind"):
        ModelSpec(kind="transformer")
    with pytest.raises(ValueError, match="2 bands"):
        _model(mode="periodization", wavelet="db2", levels=2, horizon=16)


@pytest.mark.parametrize("conditioner", ["state_embedding", "stft_xattn", "none"])
def test_batched_bands_and_unbatched_cfg_give_the_same_plans(conditioner: str) -> None:
    model = _model(conditioner=conditioner).eval()
    s0 = _window(model)[0][:, 0]
    kw = dict(sampler="ddim", sample_steps=4, guidance=1.5)
    ref = model.plan(s0, generator=torch.Generator().manual_seed(0), **kw)[0]
    for extra in ({"batch_bands": True}, {"batch_cfg": False}, {"batch_bands": True, "batch_cfg": False}):
        out = model.plan(s0, generator=torch.Generator().manual_seed(0), **kw, **extra)[0]
        assert torch.allclose(out, ref, atol=1e-5), extra


@pytest.mark.parametrize("wavelet,levels,mode,horizon", [("haar", 1, "haar_pad1", 6), ("db2", 2, "zero", 8),
                                                          ("sym3", 1, "symmetric", 7)])
def test_coefficient_bounds_are_the_extremes_over_the_state_box(wavelet, levels, mode, horizon) -> None:
    """A linear map's max over [−1, 1]^H is attained at a vertex: enumerate all 2^H sign vectors."""
    import itertools

    from wfdiffuser.models import coefficient_bounds
    from wfdiffuser.wavelets import DWT1d

    dwt = DWT1d(wavelet, levels, mode).double()
    vertices = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=horizon)), dtype=torch.float64)[:, :, None]
    brute = [b.abs().amax(0) for b in dwt(vertices)]
    bounds = coefficient_bounds(dwt, horizon)
    assert len(bounds) == levels + 1
    for got, ref in zip(bounds, brute):
        assert got.shape == ref.shape
        assert torch.allclose(got.double(), ref, atol=1e-6)


def test_haar_low_band_reaches_sqrt2_which_the_public_unit_clip_cuts() -> None:
    from wfdiffuser.models import coefficient_bounds
    from wfdiffuser.wavelets import DWT1d

    low, high = coefficient_bounds(DWT1d("haar", 1, "haar_pad1"), 6)  # z = [0, s0..s5, 0]: 4 pairs
    r2 = math.sqrt(2.0)
    assert torch.allclose(low[:, 0], torch.tensor([1 / r2, r2, r2, 1 / r2]), atol=1e-6)
    assert torch.allclose(high[:, 0], torch.tensor([1 / r2, r2, r2, 1 / r2]), atol=1e-6)
    # a window resting at the normaliser's upper limit: its low band is √2, inside `range`, outside `unit`
    model = _model(clip="range")
    assert model._clip_bounds and torch.allclose(model._clip_bounds[0].amax(), torch.tensor(r2), atol=1e-6)
    assert _model(clip="unit")._clip_bounds is None and _model(clip="unit").diffusion.clip == 1.0
    assert _model(clip="none").diffusion.clip == 0.0


def test_band_bounds_clip_x0_per_entry_and_unit_bounds_equal_the_scalar_clip() -> None:
    from wfdiffuser.diffusion import Diffusion

    d = Diffusion(10, clip=1.0)
    g = torch.Generator().manual_seed(0)
    x, eps = 3 * torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    t = torch.full((2,), 7)
    raw = Diffusion(10, clip=0.0).predict_x0(x, t, eps)
    assert raw.abs().max() > 1.5  # the test needs entries beyond both bounds
    assert torch.equal(d.predict_x0(x, t, eps, torch.ones(4, 1)), d.predict_x0(x, t, eps))
    bound = torch.tensor([[0.5], [1.0], [1.5], [2.0]])
    assert torch.equal(d.predict_x0(x, t, eps, bound), torch.maximum(torch.minimum(raw, bound), -bound))
    # the step uses the clipped x̂0: same step with a bound of 1 and with the scalar clip
    assert torch.equal(d.ddim_step(x, 7, 3, eps, torch.ones(4, 1)), d.ddim_step(x, 7, 3, eps))
    assert not torch.equal(d.ddim_step(x, 7, 3, eps, bound), d.ddim_step(x, 7, 3, eps))


def test_clip_range_needs_a_bounded_normaliser() -> None:
    from shared.errors import ConfigError
    from shared.training import load_config

    from wfdiffuser.config import WFConfig

    with pytest.raises(ConfigError, match="model.clip"):
        load_config(WFConfig, None, ["data.normalizer=gaussian"])
    load_config(WFConfig, None, ["data.normalizer=gaussian", "model.clip=none"])  # accepted
