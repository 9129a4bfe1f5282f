"""Quantizers on hand values: straight-through and rotation-trick gradients, SimVQ's frozen C / learned W, the β split
of codebook vs commitment loss, VQ's learned / EMA / dead-code-restart modes, the registry, and a real 2-process gloo
run of the EMA statistics (card §2, §3, §8)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from torch import nn

from shared.errors import ConfigError
from shared.training.distributed import run_local_group
from vqrae.quantizers import QUANTIZERS, VQ, QuantizerOutput, SimVQ, build_quantizer, rotate_to


def _z(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _perturb(q: SimVQ, scale: float = 0.3, seed: int = 1) -> SimVQ:
    with torch.no_grad():
        q.weight.add_(scale * _z(q.dim, q.dim, seed=seed, dtype=q.weight.dtype))
    return q


# --- straight-through -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: SimVQ(32, 8), lambda: VQ(32, 8), lambda: VQ(32, 8, ema_decay=0.9)])
def test_straight_through_forward_is_codes_and_gradient_is_identity(make):
    torch.manual_seed(0)
    q = make()
    z = _z(2, 5, 8).requires_grad_(True)
    codes = q.codes().detach().clone()  # EMA mode updates the codes after the forward; the output uses these
    out = q(z)
    assert isinstance(out, QuantizerOutput) and out.indices.shape == (2, 5) and out.indices.dtype == torch.long
    assert torch.equal(out.quantized, codes[out.indices])  # bit-exact, not z + (q − z)
    q.eval()
    assert torch.equal(q(z).quantized, q.lookup(q(z).indices))
    g = _z(2, 5, 8, seed=3)
    (out.quantized * g).sum().backward()
    assert torch.equal(z.grad, g)


@pytest.mark.parametrize("rotation_trick", [False, True])
def test_gradient_reaches_the_encoder_through_the_quantizer(rotation_trick):
    torch.manual_seed(0)
    enc, q = nn.Linear(6, 8), SimVQ(32, 8, rotation_trick=rotation_trick)
    x = _z(3, 4, 6)
    out = q(enc(x))
    out.quantized.square().sum().backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    assert enc.bias.grad.abs().sum() > 0
    assert q.weight.grad is None  # the decoder-side gradient reaches W only through the codebook loss


# --- SimVQ ------------------------------------------------------------------------------------------------------------

def test_simvq_w_learns_frozen_c_does_not():
    torch.manual_seed(0)
    q = SimVQ(64, 8)
    assert [name for name, _ in q.named_parameters()] == ["weight"]
    c0, w0 = q.codebook.clone(), q.weight.detach().clone()
    opt = torch.optim.SGD(q.parameters(), lr=0.5)
    out = q(_z(4, 6, 8))
    out.loss.backward()
    assert q.codebook.grad is None and not q.codebook.requires_grad
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0
    opt.step()
    assert torch.equal(q.codebook, c0)
    assert not torch.equal(q.weight.detach(), w0)
    assert "codebook" in q.state_dict()


def test_simvq_codebook_std_is_one_over_sqrt_e_and_seeded():
    torch.manual_seed(0)
    q = SimVQ(4096, 64)
    assert q.codebook.std().item() == pytest.approx(64**-0.5, rel=0.02)
    assert q.codebook.mean().abs().item() < 0.01
    assert torch.equal(q.weight.detach(), torch.eye(64))  # identity init: effective codes = C at step 0
    assert torch.equal(q.codes(), q.codebook)
    torch.manual_seed(0)
    assert torch.equal(SimVQ(4096, 64).codebook, q.codebook)
    assert not torch.equal(SimVQ(4096, 64).codebook, q.codebook)


def test_simvq_indices_equal_brute_force_over_c_times_w():
    torch.manual_seed(0)
    q = _perturb(SimVQ(200, 16).double())
    z = _z(3, 50, 16, seed=5, dtype=torch.float64)
    out = q(z)
    effective = q.codebook @ q.weight.detach()
    brute = torch.cdist(z.reshape(-1, 16), effective).argmin(-1).view(3, 50)
    assert torch.equal(out.indices, brute)
    assert not torch.equal(brute, torch.cdist(z.reshape(-1, 16), q.codebook).argmin(-1).view(3, 50))  # W matters
    assert torch.equal(out.quantized, effective[out.indices])


def test_simvq_loss_split_on_hand_values():
    beta = 0.5
    q = SimVQ(2, 2, beta=beta).double()
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        q.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))  # effective codes (2, 0) and (0, 1)
    z = torch.tensor([[[1.5, 0.5], [0.0, 2.0]]], dtype=torch.float64, requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [[0, 1]]
    # q − z = (0.5, −0.5), (0, −1): mean of squares = (0.25 + 0.25 + 0 + 1) / 4
    assert out.codebook_loss.item() == pytest.approx(0.375)
    assert out.commit_loss.item() == pytest.approx(0.375)
    assert out.loss.item() == pytest.approx(0.375 + beta * 0.375)
    diff = torch.tensor([[0.5, -0.5], [0.0, -1.0]], dtype=torch.float64)  # q − z
    # codebook term: W only, dL/dW = (2/4) · C_idxᵀ (q − z) with C_idx = I here
    gz, gw = torch.autograd.grad(out.codebook_loss, (z, q.weight), allow_unused=True)
    assert gz is None
    torch.testing.assert_close(gw, 0.5 * torch.eye(2, dtype=torch.float64).T @ diff)
    # commitment term: z only, dL/dz = (2/4) · (z − q)
    out = q(z)
    gz, gw = torch.autograd.grad(out.commit_loss, (z, q.weight), allow_unused=True)
    assert gw is None
    torch.testing.assert_close(gz, -0.5 * diff[None])
    # the total: codebook part → W, β · commitment part → z
    out = q(z)
    gz, gw = torch.autograd.grad(out.loss, (z, q.weight))
    torch.testing.assert_close(gz, -beta * 0.5 * diff[None])
    torch.testing.assert_close(gw, 0.5 * diff)


def test_rotation_trick_value_and_gradient_against_explicit_r():
    torch.manual_seed(0)
    q = _perturb(SimVQ(16, 5, rotation_trick=True).double())
    z = _z(2, 3, 5, seed=7, dtype=torch.float64).requires_grad_(True)
    out = q(z)
    codes = q.codes().detach()[out.indices]
    assert torch.equal(out.quantized, codes)
    g = _z(2, 3, 5, seed=8, dtype=torch.float64)
    (out.quantized * g).sum().backward()
    expected = torch.empty_like(g)
    for i in range(2):
        for j in range(3):
            zv, qv = z[i, j].detach(), codes[i, j]
            zh, qh = zv / zv.norm(), qv / qv.norm()
            r = (zh + qh) / (zh + qh).norm()
            rot = torch.eye(5, dtype=torch.float64) - 2 * torch.outer(r, r) + 2 * torch.outer(qh, zh)
            torch.testing.assert_close(rot @ zh, qh)  # R takes ẑ to q̂
            lam = qv.norm() / zv.norm()
            torch.testing.assert_close(lam * rot @ zv, qv)
            expected[i, j] = lam * rot.T @ g[i, j]  # out = λR z  ⇒  ∂L/∂z = λ Rᵀ ∂L/∂out
    torch.testing.assert_close(z.grad, expected)
    assert not torch.allclose(z.grad, g)  # differs from the plain straight-through
    assert q.weight.grad is None


def test_rotate_to_keeps_dtype_and_exact_value_in_bf16():
    z = _z(4, 8).bfloat16().requires_grad_(True)
    target = _z(4, 8, seed=2).bfloat16()
    out = rotate_to(z, target)
    assert out.dtype == torch.bfloat16 and torch.equal(out, target)
    out.float().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_bf16_input_gives_bf16_output_and_float32_losses():
    torch.manual_seed(0)
    q = _perturb(SimVQ(64, 8))
    z = _z(2, 10, 8).bfloat16()
    out = q(z)
    assert out.quantized.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert torch.equal(out.quantized, q.codes().detach()[out.indices].bfloat16())


def test_input_dim_mismatch_names_the_field():
    with pytest.raises(ValueError, match="quantizer.dim"):
        SimVQ(8, 4)(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="quantizer.dim"):
        VQ(8, 4)(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="quantizer.beta"):
        SimVQ(8, 4, beta=-1.0)


# --- VQ ---------------------------------------------------------------------------------------------------------------

def test_vq_learned_codebook_gets_gradient_and_moves_toward_z():
    torch.manual_seed(0)
    q = VQ(16, 4, beta=0.25)
    assert isinstance(q.codebook, nn.Parameter)
    z = _z(1, 8, 4, seed=3)
    out = q(z)
    torch.testing.assert_close(out.loss, out.codebook_loss + 0.25 * out.commit_loss)
    out.loss.backward()
    used = out.indices.unique()
    assert q.codebook.grad[used].abs().sum() > 0
    assert q.codebook.grad[[i for i in range(16) if i not in used.tolist()]].abs().sum() == 0
    before = out.codebook_loss.item()
    torch.optim.SGD(q.parameters(), lr=1.0).step()
    assert q(z).codebook_loss.item() < before


def _set_ema_codebook(q: VQ, codes: torch.Tensor) -> None:
    with torch.no_grad():
        q.codebook.copy_(codes)
        q.embed_sum.copy_(codes)  # N = 1 at the start, so M = C
        q.cluster_size.fill_(1.0)


def test_vq_ema_update_hand_example():
    q = VQ(2, 2, beta=0.25, ema_decay=0.5, eps=0.5)
    assert not isinstance(q.codebook, nn.Parameter) and not list(q.parameters())
    _set_ema_codebook(q, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    z = torch.tensor([[[0.9, 0.1], [1.1, -0.1], [0.2, 0.8]]], requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [[0, 0, 1]]
    torch.testing.assert_close(out.quantized, torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]))  # old codes
    assert out.codebook_loss.item() == 0.0 and out.loss.item() == pytest.approx(0.25 * out.commit_loss.item())
    # counts (2, 1), sums (2, 0) and (0.2, 0.8):  N = 0.5·1 + 0.5·(2, 1) = (1.5, 1);  M = ((1.5, 0), (0.1, 0.9))
    torch.testing.assert_close(q.cluster_size, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(q.embed_sum, torch.tensor([[1.5, 0.0], [0.1, 0.9]]))
    # Laplace: Ñ = (N + 0.5) / (2.5 + 2·0.5) · 2.5 = (10/7, 15/14);  c = M / Ñ
    torch.testing.assert_close(q.codebook, torch.tensor([[1.05, 0.0], [0.1 * 14 / 15, 0.84]]))
    # no update in eval mode
    q.eval()
    c = q.codebook.clone()
    q(z)
    assert torch.equal(q.codebook, c)


def _restart_setup(threshold: float, seed: int = 0) -> tuple[VQ, torch.Tensor]:
    torch.manual_seed(seed)
    q = VQ(6, 3, ema_decay=0.5, dead_code_threshold=threshold)
    codes = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [50.0, 0, 0], [0, 50.0, 0], [0, 0, 50.0], [-50.0, 0, 0]])
    _set_ema_codebook(q, codes)
    z = torch.cat([torch.tensor([1.0, 0, 0]) + 0.1 * _z(5, 3, seed=1),
                   torch.tensor([0, 1.0, 0]) + 0.1 * _z(4, 3, seed=2)])
    return q, z[None]


def test_vq_dead_code_restart_replaces_exactly_the_dead_codes():
    ref, z = _restart_setup(0.0)
    q, _ = _restart_setup(0.6)
    assert q(z).indices.unique().tolist() == [0, 1]
    ref(z)
    # codes 2..5 unused: N = 0.5·1 < 0.6 → dead; codes 0, 1: N ≥ 1 → alive
    dead = torch.tensor([False, False, True, True, True, True])
    assert torch.equal(q.codebook[~dead], ref.codebook[~dead])
    rows = z[0]
    for i in torch.nonzero(dead).flatten().tolist():
        assert not torch.allclose(q.codebook[i], ref.codebook[i])
        assert (q.codebook[i] == rows).all(-1).any()  # a vector of the current batch
    torch.testing.assert_close(q.cluster_size[dead], torch.full((4,), 0.6))
    torch.testing.assert_close(q.embed_sum[dead], 0.6 * q.codebook[dead])
    # reproducible: same seed → same replacements
    q2, _ = _restart_setup(0.6)
    q2(z)
    assert torch.equal(q2.codebook, q.codebook)
    # the generator state travels in the state dict: a module built with another seed continues identically
    q3, _ = _restart_setup(0.6, seed=1)
    q3.load_state_dict(q.state_dict())
    q4, _ = _restart_setup(0.6, seed=2)
    q4.load_state_dict({k: v for k, v in q.state_dict().items() if k != "_extra_state"}, strict=False)
    z2 = z + 0.05
    for m in (q, q3, q4):
        m(z2)
    assert torch.equal(q3.codebook, q.codebook)
    assert not torch.equal(q4.codebook, q.codebook)  # same statistics, other generator → other restarts


def test_vq_restarts_change_what_a_second_batch_sees():
    q, z = _restart_setup(0.6)
    q(z)
    ids = q(z).indices
    assert len(ids.unique()) > 2  # restarted codes sit on batch vectors, so they now win some tokens


def test_vq_config_errors_name_fields():
    with pytest.raises(ValueError, match="quantizer.ema_decay"):
        VQ(8, 4, dead_code_threshold=1.0)
    with pytest.raises(ValueError, match="quantizer.ema_decay"):
        VQ(8, 4, ema_decay=1.0)
    with pytest.raises(ValueError, match="quantizer.dead_code_threshold"):
        VQ(8, 4, ema_decay=0.9, dead_code_threshold=-1.0)
    assert isinstance(VQ(8, 4, ema_decay=0.0).codebook, nn.Parameter)  # 0 = off, as in the config


# --- registry ---------------------------------------------------------------------------------------------------------

def test_build_quantizer_registry():
    assert set(QUANTIZERS) == {"simvq", "vq"}
    s = build_quantizer("simvq", 32, 8, beta=0.5, rotation_trick=True, ema_decay=0.0, dead_code_threshold=0.0)
    assert isinstance(s, SimVQ) and (s.codebook_size, s.dim, s.beta, s.rotation_trick) == (32, 8, 0.5, True)
    v = build_quantizer("vq", 32, 8, ema_decay=0.9, dead_code_threshold=0.1)
    assert isinstance(v, VQ) and v.ema and v.dead_code_threshold == 0.1
    with pytest.raises(ConfigError, match="quantizer.kind"):
        build_quantizer("fsq", 32, 8)
    with pytest.raises(ValueError, match="quantizer.ema_decay"):
        build_quantizer("simvq", 32, 8, ema_decay=0.9)


# --- two real processes over gloo -----------------------------------------------------------------------------------

def _rank_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return [torch.randn(1, 12, 4, generator=g), 0.5 + torch.randn(1, 20, 4, generator=g)]


def _worker(rank: int, world: int, result_dir: str) -> None:
    torch.manual_seed(0)
    q = VQ(64, 4, ema_decay=0.5, dead_code_threshold=0.6)
    q(_rank_batches()[rank])
    torch.save({k: v for k, v in q.state_dict().items() if k != "_extra_state"}, os.path.join(result_dir, f"{rank}.pt"))


def test_two_process_gloo_ema_statistics_identical_and_global():
    with tempfile.TemporaryDirectory() as tmp:
        run_local_group(_worker, 2, tmp)
        res = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2)]
    for key in ("codebook", "cluster_size", "embed_sum"):
        assert torch.equal(res[0][key], res[1][key]), key
    # the statistics are those of the union batch (restarted codes aside: their rows are rank 0's)
    torch.manual_seed(0)
    union = VQ(64, 4, ema_decay=0.5, dead_code_threshold=0.0)
    union(torch.cat(_rank_batches(), dim=1))
    dead = res[0]["cluster_size"] < 0.9  # restarted: N = τ = 0.6; used: N ≥ 1; unused before restart: 0.5
    assert 0 < int(dead.sum()) < 64
    torch.testing.assert_close(res[0]["cluster_size"][~dead], union.cluster_size[~dead])
    torch.testing.assert_close(res[0]["embed_sum"][~dead], union.embed_sum[~dead])
    torch.testing.assert_close(res[0]["codebook"][~dead], union.codebook[~dead])
    rank0_rows = _rank_batches()[0][0]
    for i in torch.nonzero(dead).flatten().tolist():
        assert (res[0]["codebook"][i] == rank0_rows).all(-1).any()
