"""Similarity losses and the GradICON objective: upstream oracle, invariances and analytic values."""

import pytest
import torch

import mgicon
from mgicon import losses
from mgicon.maps import DisplacementChain, identity_grid
from mgicon.testing import smooth_volume
from tests.oracle import ours_from, upstream_network

SHAPE = (28, 32, 36)


def _upstream_similarity(name):
    import icon_registration as icon

    return {
        "lncc": icon.LNCC(sigma=5),
        "lncc2": icon.losses.SquaredLNCC(sigma=5),
        "mind": icon.losses.MINDSSC(radius=2, dilation=2),
    }[name]


@pytest.mark.oracle
@pytest.mark.parametrize("name", ["lncc", "lncc2", "mind"])
@pytest.mark.parametrize("masked", [False, True])
def test_similarity_equals_upstream(name, masked):
    a = smooth_volume(SHAPE, 1, batch=2)
    b = smooth_volume(SHAPE, 2, batch=2) ** 2
    mask = (smooth_volume(SHAPE, 3, batch=2) > 0.4).float() if masked else None
    expected = _upstream_similarity(name)(a, b, mask).item()
    got = losses.get_similarity(name)(a, b, mask).item()
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.oracle
def test_objective_and_gradicon_equal_upstream_with_the_same_noise():
    n = 80
    up = upstream_network(n, "lncc2", seed=7)
    ours = ours_from(up, n)
    a, b = smooth_volume((n,) * 3, 1), smooth_volume((n,) * 3, 2)
    with torch.no_grad():
        torch.manual_seed(11)
        expected = up(a, b)
        terms = losses.objective(
            ours, a, b, "lncc2", noise=losses.gradicon_noise((n,) * 3, torch.Generator().manual_seed(11))
        )
    assert expected.inverse_consistency_loss.item() > 1e-3, "random weights must give a non-zero GradICON term"
    assert terms.gradicon.item() == pytest.approx(expected.inverse_consistency_loss.item(), rel=1e-5)
    assert terms.similarity.item() == pytest.approx(expected.similarity_loss.item(), rel=1e-5)
    assert terms.total.item() == pytest.approx(expected.all_loss.item(), rel=1e-5)


@pytest.mark.oracle
def test_objective_gradients_equal_upstream():
    n = 72
    up = upstream_network(n, "lncc2", seed=9)
    ours = ours_from(up, n)
    a, b = smooth_volume((n,) * 3, 4), smooth_volume((n,) * 3, 5)
    torch.manual_seed(3)
    up(a, b).all_loss.backward()
    losses.objective(
        ours, a, b, "lncc2", noise=losses.gradicon_noise((n,) * 3, torch.Generator().manual_seed(3))
    ).total.backward()
    theirs = torch.cat([p.grad.flatten() for p in up.regis_net.parameters()])
    mine = torch.cat([p.grad.flatten() for p in ours.parameters()])
    assert theirs.norm() > 0
    # Both directions run as one batch here (exact in eval mode); the batched convolutions round differently, and
    # the GradICON finite differences divide that rounding by delta = 1e-3: about 1e-3 relative (unbatched: 4e-7).
    assert ((mine - theirs).norm() / theirs.norm()).item() < 5e-3
    assert torch.nn.functional.cosine_similarity(mine, theirs, dim=0).item() > 0.99999


def test_squared_lncc_is_invariant_to_intensity_negation(volumes):
    a, b, _ = volumes
    # negation, not 1 − b: the zero-padded Gaussian is linear, so -b has exactly the local statistics of b
    assert losses.squared_lncc(a, -b).item() == pytest.approx(losses.squared_lncc(a, b).item(), rel=1e-5)
    # plain LNCC is not: a negated copy is maximally dissimilar
    assert losses.lncc(a, -a).item() > 1.9 and losses.lncc(a, a).item() < 0.1
    assert losses.squared_lncc(a, -a).item() < 0.1


def test_mind_ssc_is_nearly_invariant_to_a_monotone_remapping(volumes):
    a, b, _ = volumes
    remapped = 0.2 + 0.6 * a**1.5
    assert losses.mind_ssc(a, a).item() == 0
    assert losses.mind_ssc(a, remapped).item() < 0.2 * losses.mind_ssc(a, b).item()
    # LNCC² with a linear remapping is exact, MIND with it too
    assert losses.mind_ssc(a, 0.5 * a + 0.1).item() < 1e-4


def test_mind_descriptor_has_12_channels_in_0_1(volumes):
    a, _, _ = volumes
    d = losses.mind_ssc_descriptor(a)
    assert d.shape == (1, 12, *a.shape[2:])
    assert d.min() >= 0 and d.max() <= 1


@pytest.mark.parametrize(
    "values, mask, expected",
    [
        (torch.tensor([1.0, 2, 3, 4]), None, 2.5),
        (torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 1, 0, 0]), 1.5),
        (torch.tensor([1.0, 2, 3, 4]), torch.tensor([0.0, 0, 0, 5]), 4.0),
    ],
)
def test_masked_mean_averages_over_the_mask(values, mask, expected):
    v = values.view(1, 1, 4, 1, 1)
    m = None if mask is None else mask.view(1, 1, 4, 1, 1)
    assert losses.masked_mean(v, m).item() == pytest.approx(expected)


def test_mask_changes_the_loss_and_a_full_mask_does_not(volumes):
    a, b, mask = volumes
    assert losses.squared_lncc(a, b, torch.ones_like(a)).item() == pytest.approx(
        losses.squared_lncc(a, b).item(), rel=1e-6
    )
    assert losses.squared_lncc(a, b, mask).item() != pytest.approx(losses.squared_lncc(a, b).item(), rel=1e-3)


def _linear_map_chain(shape, scale):
    """phi(x) = c + scale·(x − c) as a displacement field (exactly linear, so trilinear interpolation is exact)."""
    x = identity_grid(shape)
    return DisplacementChain([(scale - 1.0) * (x - 0.5)])


@pytest.mark.parametrize("scale", [1.0, 0.9, 1.2])
def test_gradicon_of_a_scaling_is_its_squared_jacobian_error(scale):
    shape = (16, 16, 16)  # even edge: the subsampled grid plus delta stays inside [0, 1]
    phi_AB = _linear_map_chain(shape, scale)
    phi_BA = DisplacementChain([torch.zeros(1, 3, *shape)])
    value = losses.gradicon(phi_AB, phi_BA, shape, noise=torch.zeros(1, 3, *shape)).item()
    # grad(e) = (1 − s) I: per direction the mean over 3 components of ((1 − s) e_k)² is (1 − s)²/3; 3 directions
    assert value == pytest.approx((1 - scale) ** 2, abs=1e-4)


def test_gradicon_is_zero_for_inverse_translations():
    shape = (16, 16, 16)
    t = torch.tensor([0.02, -0.01, 0.03]).view(1, 3, 1, 1, 1).expand(1, 3, *shape)
    value = losses.gradicon(DisplacementChain([t]), DisplacementChain([-t]), shape).item()
    assert value < 1e-6


def test_loss_randomized_objective_uses_the_loss_images():
    net = mgicon.build_network("tiny")
    a, b = smooth_volume((32,) * 3, 1), smooth_volume((32,) * 3, 2)
    eq3 = losses.objective(net, a, b, "lncc")
    same = losses.objective(net, a, b, "lncc", loss_A=a, loss_B=b)
    other = losses.objective(net, a, b, "lncc", loss_A=1 - a, loss_B=b)
    assert same.similarity.item() == pytest.approx(eq3.similarity.item(), rel=1e-6)
    assert other.similarity.item() != pytest.approx(eq3.similarity.item(), rel=1e-3)
    with pytest.raises(ValueError, match="both loss images"):
        losses.objective(net, a, b, "lncc", loss_A=a)


def test_unknown_similarity_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown similarity 'ssd'"):
        losses.get_similarity("ssd")
