"""Jumpout (Algorithm 1) statistics with fixed seeds and tolerances."""
import numpy as np
import pytest
import torch

from maskfx.nn import Jumpout


def expected_rate(sigma: float, p_min: float, p_max: float) -> float:
    """E[min(p_min + |X|, p_max)], X ~ N(0, sigma), by numerical integration (independent oracle)."""
    x = np.linspace(0.0, 12.0 * sigma, 400_001)
    density = 2.0 * np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2.0 * np.pi))
    return float(np.trapezoid(np.minimum(p_min + x, p_max) * density, x))


def with_active_fraction(q: float, shape=(64, 1000), seed=0) -> torch.Tensor:
    """A post-ReLU-like tensor in which exactly a fraction ``q`` of the units is positive."""
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(shape, generator=g) + 0.5
    n_zero = round((1 - q) * h.numel())
    h.view(-1)[torch.randperm(h.numel(), generator=g)[:n_zero]] = 0.0
    return h


@pytest.mark.parametrize("sigma", [0.1, 0.3])
def test_share_of_units_changed_matches_expected_rate(sigma):
    # Section 3.2: with p' = p / q+, a share p of *all* units is dropped whatever q+ is.
    torch.manual_seed(0)
    layer = Jumpout(sigma=sigma).train()
    h = with_active_fraction(0.8)  # p' <= 0.6 / 0.8 = 0.75, below the 0.9 bound
    active = h > 0
    shares = [((layer(h) == 0) & active).sum().item() / h.numel() for _ in range(3000)]
    target = expected_rate(sigma, 0.01, 0.6)
    assert np.mean(shares) == pytest.approx(target, abs=0.004)
    assert min(shares) >= 0.01 - 0.01 and max(shares) <= 0.6 + 0.01  # binomial noise: sd ~0.002
    assert layer.expected_rate() == pytest.approx(target, abs=1e-6)


def test_kept_units_are_rescaled_by_one_minus_rate_to_minus_0_75():
    torch.manual_seed(1)
    layer = Jumpout(sigma=0.2).train()
    h = with_active_fraction(0.5, shape=(100, 2000))
    active = h > 0
    for _ in range(20):
        out = layer(h)
        kept = (out != 0) & active
        scales = out[kept] / h[kept]
        assert torch.allclose(scales, scales[0].expand_as(scales), rtol=1e-5)  # one factor per forward
        dropped_share = 1.0 - kept.sum().item() / active.sum().item()  # empirical p'
        assert scales[0].item() == pytest.approx((1.0 - dropped_share) ** -0.75, rel=0.02)
        assert torch.equal(out[~active], h[~active])  # inactive units stay zero


def test_no_active_unit_returns_input_untouched():
    layer = Jumpout().train()
    for h in (torch.zeros(4, 10), -torch.rand(4, 10)):
        assert torch.equal(layer(h), h)


def test_rate_near_one_is_bounded_and_finite():
    torch.manual_seed(2)
    layer = Jumpout(sigma=0.5).train()
    h = torch.zeros(8, 1000)
    h[0, :3] = 1.0  # q+ = 3 / 8000: p / q+ is far above 1
    for _ in range(50):
        out = layer(h)
        assert torch.isfinite(out).all()
        assert out.max().item() <= (1 - 0.9) ** -0.75 + 1e-4


def test_eval_is_identity():
    layer = Jumpout().eval()
    h = torch.relu(torch.randn(4, 16))
    assert layer(h) is h


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(3)
    layer = Jumpout(sigma=0.2).train()
    h = with_active_fraction(0.7, shape=(16, 64)).requires_grad_()
    out = layer(h)
    out.sum().backward()
    multiplier = torch.where(h.detach() > 0, out.detach() / h.detach().clamp(min=1e-12), torch.zeros(()))
    active = h.detach() > 0
    assert torch.allclose(h.grad[active], multiplier[active])
    assert (h.grad[active] == 0).any() and (h.grad[active] > 1).any()


def test_per_sample_normalises_each_sample_by_its_own_active_fraction():
    torch.manual_seed(4)
    dense = with_active_fraction(1.0, shape=(1, 4000), seed=5)
    sparse = with_active_fraction(0.25, shape=(1, 4000), seed=6)
    h = torch.cat([dense, sparse])
    per_sample, per_batch = Jumpout(sigma=0.1, per_sample=True).train(), Jumpout(sigma=0.1).train()
    rng = np.random.default_rng(0)
    p = np.minimum(0.01 + np.abs(rng.normal(0, 0.1, 1_000_000)), 0.6)

    def dropped_share_of_active(layer, row):
        active = h[row] > 0
        return np.mean([((layer(h)[row] == 0) & active).sum().item() / active.sum().item() for _ in range(2000)])

    assert dropped_share_of_active(per_sample, 0) == pytest.approx(p.mean(), abs=0.005)
    assert dropped_share_of_active(per_sample, 1) == pytest.approx(np.minimum(p / 0.25, 0.9).mean(), abs=0.01)
    batch_rate = np.minimum(p / 0.625, 0.9).mean()  # q+ of the whole batch: (1 + 0.25) / 2
    assert dropped_share_of_active(per_batch, 0) == pytest.approx(batch_rate, abs=0.008)
    assert dropped_share_of_active(per_batch, 1) == pytest.approx(batch_rate, abs=0.01)


@pytest.mark.parametrize("kwargs, field", [
    (dict(sigma=0.0), "sigma"), (dict(sigma=float("nan")), "sigma"), (dict(p_min=-0.1), "p_min"),
    (dict(p_min=0.5, p_max=0.4), "p_max"), (dict(p_max=1.5), "p_max"), (dict(max_rate=1.0), "max_rate"),
])
def test_invalid_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Jumpout(**kwargs)


# --- Modifications I, II, III switched one at a time (the paper's ablation, Table 1) ---------

def drawn_rates(layer: Jumpout, n: int, seed: int) -> np.ndarray:
    """``n`` rates ``p'``, one per sample of a ``per_sample`` layer (the same draw as per batch,
    ``n`` at once), read back exactly from each sample's one rescale factor: all units are
    active, so ``p' = p``."""
    assert layer.per_sample
    torch.manual_seed(seed)
    exponent = 0.75 if layer.damped_rescale else 1.0
    scales = layer(torch.ones(n, 256)).amax(1).double().numpy()
    return 1.0 - scales ** (-1.0 / exponent)


def truncated_half_normal_cdf(sigma: float, p_min: float, p_max: float):
    """CDF of ``p_min + |N(0, sigma)|`` conditioned on staying below ``p_max``."""
    from scipy.special import erf
    return lambda x: np.clip(erf((np.asarray(x) - p_min) / (sigma * np.sqrt(2))), 0, None) \
        / erf((p_max - p_min) / (sigma * np.sqrt(2)))


@pytest.mark.parametrize("sigma", [0.1, 0.3])
def test_sampled_rate_follows_the_truncated_half_normal(sigma):
    from scipy.special import erfc
    from scipy.stats import kstest
    rates = drawn_rates(Jumpout(sigma=sigma, per_sample=True).train(), 4000, seed=10)
    assert rates.min() >= 0.01 - 1e-5
    at_cap = rates > 0.6 - 1e-4  # the truncation's point mass at p_max = 0.6
    cap_mass = erfc(0.59 / (sigma * np.sqrt(2)))
    assert at_cap.mean() == pytest.approx(cap_mass, abs=3 * np.sqrt(cap_mass * (1 - cap_mass) / 4000) + 1e-4)
    below = rates[~at_cap]
    assert kstest(below, truncated_half_normal_cdf(sigma, 0.01, 0.6)).pvalue > 0.01
    # the test has power: a 20% larger sigma is rejected on the same draws
    assert kstest(below, truncated_half_normal_cdf(1.2 * sigma, 0.01, 0.6)).pvalue < 1e-3


def test_without_modification_I_the_rate_is_fixed_at_the_mean_rate():
    layer = Jumpout(sigma=0.2, sample_rate=False, per_sample=True).train()
    rates = drawn_rates(layer, 1000, seed=11)
    np.testing.assert_allclose(rates, expected_rate(0.2, 0.01, 0.6), rtol=1e-4)


@pytest.mark.parametrize("normalize, applied", [(True, 2.0), (False, 1.0)])
def test_modification_II_divides_the_rate_by_the_active_fraction(normalize, applied):
    # q+ = 0.5, fixed p: with II the active units are dropped at p / q+ = 2p, without at p.
    torch.manual_seed(12)
    layer = Jumpout(sigma=0.1, sample_rate=False, normalize_rate=normalize).train()
    h = with_active_fraction(0.5, shape=(64, 1000))
    active = h > 0
    shares = [((layer(h) == 0) & active).sum().item() / active.sum().item() for _ in range(30)]
    assert np.mean(shares) == pytest.approx(applied * layer.expected_rate(), abs=0.002)  # sd ~4e-4


@pytest.mark.parametrize("damped", [True, False])
def test_modification_III_sets_the_rescale_exponent(damped):
    torch.manual_seed(13)
    layer = Jumpout(sigma=0.2, damped_rescale=damped).train()
    h = with_active_fraction(0.5, shape=(100, 2000))
    active = h > 0
    for _ in range(20):
        out = layer(h)
        kept = (out != 0) & active
        dropped_share = 1.0 - kept.sum().item() / active.sum().item()  # empirical p'
        scale = (out[kept] / h[kept])[0].item()
        assert scale == pytest.approx((1.0 - dropped_share) ** -(0.75 if damped else 1.0), rel=0.02)


def test_without_modification_III_the_output_keeps_its_mean_and_with_it_shrinks():
    # E[out] / h = (1 - p')**0.25 with III, exactly 1 with dropout's 1 / (1 - p'). Every sample has
    # q+ = 0.5, so p' = min(2p, 0.9); per_sample draws one p per sample, 4000 in one forward.
    h = torch.rand(4000, 1000) + 0.5
    h[:, ::2] = 0.0
    x = np.linspace(0.0, 12.0 * 0.2, 400_001)
    density = 2.0 * np.exp(-0.5 * (x / 0.2) ** 2) / (0.2 * np.sqrt(2.0 * np.pi))
    rate = np.minimum(np.minimum(0.01 + x, 0.6) / 0.5, 0.9)
    damped_mean = float(np.trapezoid((1.0 - rate) ** 0.25 * density, x))
    for damped, target in ((False, 1.0), (True, damped_mean)):
        torch.manual_seed(14)
        layer = Jumpout(sigma=0.2, per_sample=True, damped_rescale=damped).train()
        ratios = layer(h).sum(1) / h.sum(1)
        assert ratios.mean().item() == pytest.approx(target, abs=0.003)  # the rate spread: sd of the mean ~0.001
    assert damped_mean < 0.96  # the two targets are far apart at this tolerance


def test_all_three_off_is_dropout_at_the_mean_rate():
    torch.manual_seed(15)
    layer = Jumpout(sigma=0.1, sample_rate=False, normalize_rate=False, damped_rescale=False).train()
    p = layer.expected_rate()
    h = with_active_fraction(0.3, shape=(64, 1000))
    active = h > 0
    for _ in range(20):
        out, reference = layer(h), torch.nn.functional.dropout(h, p)
        kept = (out != 0) & active
        torch.testing.assert_close(out[kept], h[kept] / (1 - p))
        for y in (out, reference):  # both drop a share p of the active units (sd ~0.002)
            assert ((y == 0) & active).sum().item() / active.sum().item() == pytest.approx(p, abs=0.01)


@pytest.mark.parametrize("field", ["per_sample", "sample_rate", "normalize_rate", "damped_rescale"])
def test_switches_must_be_booleans(field):
    with pytest.raises(ValueError, match=field):
        Jumpout(**{field: 1})
