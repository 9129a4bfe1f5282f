"""DWT1d against pywt (independent reference), haar_pad1 identities (card §3) and the horizon rule (card §5)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch

from wfdiffuser.wavelets import DWT1d, check_horizon, valid_horizons

WAVELETS = ("haar", "db2", "db4", "sym4", "coif1")


@pytest.mark.parametrize("mode", ["zero", "periodization", "symmetric", "reflect"])
@pytest.mark.parametrize("wavelet", WAVELETS)
def test_matches_pywt_wavedec_and_round_trips(wavelet: str, mode: str) -> None:
    rng = np.random.default_rng(0)
    for levels in (1, 2, 3):
        for length in (13, 30):
            x = rng.standard_normal((2, length, 3))
            dwt = DWT1d(wavelet, levels, mode)
            coeffs = dwt.forward(torch.from_numpy(x))
            with warnings.catch_warnings():  # pywt warns when the level is high for the length
                warnings.simplefilter("ignore")
                ref = pywt.wavedec(x, wavelet, mode=mode, level=levels, axis=1)
            assert [c.shape[1] for c in coeffs] == [r.shape[1] for r in ref] == dwt.band_lengths(length)
            for c, r in zip(coeffs, ref, strict=True):
                np.testing.assert_allclose(c.numpy(), r, atol=1e-10)
            rec = dwt.inverse(coeffs, length).numpy()
            np.testing.assert_allclose(rec, pywt.waverec(ref, wavelet, mode=mode, axis=1)[:, :length], atol=1e-10)
            np.testing.assert_allclose(rec, x, atol=1e-10)


def test_float32_round_trip() -> None:
    x = torch.randn(4, 30, 11)
    dwt = DWT1d("db2", 2, "zero")
    torch.testing.assert_close(dwt.inverse(dwt(x), 30), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [30, 94])
def test_haar_pad1_equals_pywt_on_padded_signal(length: int) -> None:
    x = np.random.default_rng(1).standard_normal((3, length, 11))
    low, high = DWT1d().forward(torch.from_numpy(x))
    ref_a, ref_d = pywt.dwt(np.pad(x, ((0, 0), (1, 1), (0, 0))), "haar", axis=1)
    assert low.shape == (3, length // 2 + 1, 11)
    np.testing.assert_allclose(low.numpy(), ref_a, atol=1e-12)
    np.testing.assert_allclose(high.numpy(), ref_d, atol=1e-12)


def test_haar_pad1_first_pair_is_plus_minus_s0_over_sqrt2() -> None:
    x = torch.randn(5, 30, 4, dtype=torch.float64)
    low, high = DWT1d().forward(x)
    torch.testing.assert_close(low[:, 0], x[:, 0] / np.sqrt(2))
    torch.testing.assert_close(high[:, 0], -x[:, 0] / np.sqrt(2))
    # next pair by hand: z_2 = x_1, z_3 = x_2
    torch.testing.assert_close(low[:, 1], (x[:, 1] + x[:, 2]) / np.sqrt(2))
    torch.testing.assert_close(high[:, 1], (x[:, 1] - x[:, 2]) / np.sqrt(2))


@pytest.mark.parametrize("length", [6, 7, 30, 31])
def test_haar_pad1_inverse_exact_for_even_and_odd(length: int) -> None:
    x = torch.randn(2, length, 3, dtype=torch.float64)
    dwt = DWT1d()
    coeffs = dwt.forward(x)
    assert dwt.band_lengths(length) == [length // 2 + 1] * 2
    torch.testing.assert_close(dwt.inverse(coeffs, length), x)


def test_haar_pad1_next_state_from_both_bands() -> None:
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    low, high = DWT1d().forward(x)
    torch.testing.assert_close((low[:, 1] + high[:, 1]) / np.sqrt(2), x[:, 1])


@pytest.mark.parametrize("mode,wavelet", [("haar_pad1", "haar"), ("zero", "db2"), ("periodization", "sym4")])
def test_gradcheck(mode: str, wavelet: str) -> None:
    dwt = DWT1d(wavelet, 1 if mode == "haar_pad1" else 2, mode)
    x = torch.randn(1, 9, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tuple(dwt.forward(t)), (x,))
    coeffs = [c.detach().requires_grad_(True) for c in dwt.forward(x.detach())]
    assert torch.autograd.gradcheck(lambda *cs: dwt.inverse(list(cs), 9), tuple(coeffs))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="haar_pad1"):
        DWT1d("db2", 1, "haar_pad1")
    with pytest.raises(ValueError, match="levels"):
        DWT1d("haar", 2, "haar_pad1")
    with pytest.raises(ValueError, match="mode"):
        DWT1d("haar", 1, "smooth")
    with pytest.raises(ValueError, match="shape"):
        DWT1d().forward(torch.randn(30, 3))
    dwt = DWT1d()
    with pytest.raises(ValueError, match="band lengths"):
        dwt.inverse(dwt.forward(torch.randn(1, 30, 2)), 40)


def test_horizon_rule_haar_pad1() -> None:
    dwt = DWT1d()
    assert valid_horizons(dwt, 4, 130) == [6, 14, 22, 30, 38, 46, 54, 62, 70, 78, 86, 94, 102, 110, 118, 126]
    assert check_horizon(94, dwt, 4) == [48, 48]
    with pytest.raises(ValueError, match=r"band lengths \[51, 51\].*nearest valid horizon: 94 or 102"):
        check_horizon(100, dwt, 4)


def test_horizon_rule_haar_pad1_rejects_odd() -> None:
    with pytest.raises(ValueError, match="even horizon"):
        check_horizon(95, DWT1d(), 4)  # 95 // 2 + 1 = 48, but odd


def test_horizon_rule_multilevel_uses_pywt_lengths() -> None:
    dwt = DWT1d("db2", 2, "zero")
    valid = valid_horizons(dwt, 2, 80)
    assert valid
    for h in range(8, 81):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lengths = [c.shape[0] for c in pywt.wavedec(np.zeros(h), "db2", "zero", level=2)]
        assert (h in valid) == all(n % 2 == 0 for n in lengths)
    with pytest.raises(ValueError, match="nearest valid horizon"):
        check_horizon(next(h for h in range(10, 80) if h not in valid_horizons(dwt, 2, 80)), dwt, 2)


def test_horizon_rule_reports_impossible_configs() -> None:
    # db2/zero two levels: level-1 length ≡ 0 (mod 4) makes level 2 odd, so no H works with down_factor 4
    with pytest.raises(ValueError, match="nearest valid horizon: none.*periodization"):
        check_horizon(100, DWT1d("db2", 2, "zero"), 4)
    assert check_horizon(96, DWT1d("db2", 2, "periodization"), 4) == [24, 24, 48]
