"""Instance optimization: the objective falls, the caller's weights stay bit-identical, runs repeat."""

import pytest
import torch

import mgicon
from mgicon.optimize import instance_optimize
from mgicon.testing import randomize_weights, smooth_volume

SHAPE = (32, 32, 32)


def _pair():
    fixed = smooth_volume(SHAPE, 1, scale=8)
    moving = torch.roll(fixed, shifts=(2, -1, 1), dims=(2, 3, 4))
    return moving, fixed


@pytest.fixture
def net():
    return randomize_weights(mgicon.build_network("tiny"), seed=4, last_std=1e-4)


@pytest.mark.parametrize("sim", ["lncc", "lncc2", "mind"])
def test_objective_falls_on_a_synthetic_pair(net, sim):
    moving, fixed = _pair()
    result = instance_optimize(net, moving, fixed, similarity=sim, steps=25, lr=2e-3, seed=0)
    totals = [h["total"] for h in result.history]
    assert len(totals) == 25
    assert min(totals[-5:]) < totals[0] - 0.02 * abs(totals[0])
    assert result.phi_AB.shape == (1, 3, *SHAPE)


def test_callers_weights_and_mode_are_unchanged(net):
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    moving, fixed = _pair()
    result = instance_optimize(net, moving, fixed, steps=3, lr=1e-2)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert not torch.equal(result.phi_AB, mgicon.predict_map(net, moving, fixed)), "IO must change the map"


def test_io_is_repeatable_under_a_seed(net):
    moving, fixed = _pair()
    first = instance_optimize(net, moving, fixed, steps=3, lr=1e-3, seed=5)
    second = instance_optimize(net, moving, fixed, steps=3, lr=1e-3, seed=5)
    other = instance_optimize(net, moving, fixed, steps=3, lr=1e-3, seed=6)
    assert torch.equal(first.phi_AB, second.phi_AB)
    assert first.history == second.history
    assert first.history != other.history


def test_zero_steps_is_plain_inference_and_inverse_on_request(net):
    moving, fixed = _pair()
    result = instance_optimize(net, moving, fixed, steps=0, return_inverse=True)
    assert torch.allclose(result.phi_AB, mgicon.predict_map(net, moving, fixed), atol=1e-6)
    assert torch.allclose(result.phi_BA, mgicon.predict_map(net, fixed, moving), atol=1e-6)


def test_masks_restrict_the_similarity(net):
    moving, fixed = _pair()
    mask = torch.zeros_like(fixed)
    mask[:, :, 8:24, 8:24, 8:24] = 1
    plain = instance_optimize(net, moving, fixed, steps=1, lr=1e-3)
    masked = instance_optimize(net, moving, fixed, steps=1, lr=1e-3, mask_moving=mask, mask_fixed=mask)
    assert masked.history[0]["similarity"] != pytest.approx(plain.history[0]["similarity"], rel=1e-4)


@pytest.mark.parametrize("kwargs, message", [({"steps": -1}, "steps"), ({"lr": 0.0}, "learning rate")])
def test_bad_io_settings_are_clear_errors(net, kwargs, message):
    moving, fixed = _pair()
    with pytest.raises(ValueError, match=message):
        instance_optimize(net, moving, fixed, **kwargs)
