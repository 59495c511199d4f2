"""The GradICON network: upstream's key layout, exact agreement with upstream's maps, presets and checkpoints."""

import pytest
import torch
from torch import nn

import mgicon
from mgicon.maps import DisplacementChain, identity_grid, warp
from mgicon.network import CheckpointError, TwoStep, UNet, load_checkpoint, load_network, save_checkpoint
from mgicon.testing import randomize_weights, smooth_volume
from tests.oracle import ours_from, upstream_network

PAPER_UNET_PARAMETERS = 17_670_229  # upstream-facts §1.2, measured on upstream's tallUNet2


@pytest.mark.oracle
@pytest.mark.parametrize("last_step, keys", [(True, 188), (False, 141)])
def test_state_dict_layout_equals_upstream(last_step, keys):
    up = upstream_network(96, include_last_step=last_step)
    ours = mgicon.build_network("paper", input_shape=(96, 96, 96), include_last_step=last_step)
    theirs = up.regis_net.state_dict()
    mine = ours.state_dict()
    assert len(mine) == keys
    assert list(mine) == list(theirs)
    assert all(mine[k].shape == theirs[k].shape and mine[k].dtype == theirs[k].dtype for k in mine)
    assert all(sum(p.numel() for p in u.parameters()) == PAPER_UNET_PARAMETERS for u in ours.unets)


@pytest.mark.oracle
@pytest.mark.parametrize("last_step", [True, False])
def test_map_equals_upstream_with_random_weights(last_step):
    n = 96
    up = upstream_network(n, include_last_step=last_step, seed=3)
    ours = ours_from(up, n, include_last_step=last_step)
    a, b = smooth_volume((n,) * 3, 1), smooth_volume((n,) * 3, 2)
    with torch.no_grad():
        root = up.regis_net
        root.identity_map.isIdentity = True
        expected = root(a, b)(root.identity_map)
    got = mgicon.predict_map(ours, a, b, channels_last=False)
    displacement_voxels = (expected - root.identity_map).abs().max().item() * (n - 1)
    assert displacement_voxels > 0.5, "random weights must give a non-trivial map"
    assert (got - expected).abs().max().item() <= 1e-5
    cl = mgicon.predict_map(ours, a, b, channels_last=True)
    assert (cl - expected).abs().max().item() <= 1e-5


@pytest.mark.oracle
def test_released_format_trch_loads_strictly(tmp_path):
    up = upstream_network(80, seed=5)
    path = tmp_path / "Step_2_final.trch"
    torch.save(up.regis_net.state_dict(), path)
    net = load_network(path)
    assert net.config.preset == "paper" and net.config.input_shape == (175, 175, 175)
    assert not net.training
    for key, value in up.regis_net.state_dict().items():
        assert torch.equal(net.state_dict()[key], value)
    stage1 = tmp_path / "Step_1_final.trch"
    torch.save(upstream_network(80, include_last_step=False).regis_net.state_dict(), stage1)
    assert load_checkpoint(stage1)["config"].preset == "paper-stage1"


def test_untrained_network_predicts_identity():
    net = mgicon.build_network("tiny")
    a, b = smooth_volume((32,) * 3, 1), smooth_volume((32,) * 3, 2)
    assert torch.equal(mgicon.predict_map(net, a, b), identity_grid((32,) * 3))


@pytest.mark.parametrize("preset, shape", [("tiny", (32, 32, 32)), ("small", (64, 64, 64)), ("small", (40, 48, 36))])
def test_presets_have_the_paper_structure(preset, shape):
    net = mgicon.build_network(preset, input_shape=shape)
    seen = []
    hooks = [u.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape[2:]))) for u in net.unets]
    x = smooth_volume(shape, 1)
    mgicon.predict_map(net, x, x)
    for h in hooks:
        h.remove()
    half = tuple(-(-s // 2) for s in shape)
    quarter = tuple(-(-s // 2) for s in half)
    assert seen == [quarter, half, shape, shape]


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(64, 64, 64\) is too small"):
        mgicon.build_network("paper", input_shape=(64, 64, 64))
    mgicon.build_network("paper", input_shape=(65, 65, 65))


def test_checkpoint_rebuilds_its_network(tmp_path):
    net = randomize_weights(mgicon.build_network("small", input_shape=(40, 40, 40)), seed=2)
    path = tmp_path / "models" / "checkpoint.pt"
    save_checkpoint(net, path, step=7)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]
    again = load_network(path)
    assert again.config == net.config
    assert load_checkpoint(path)["step"] == 7
    x, y = smooth_volume((40,) * 3, 1), smooth_volume((40,) * 3, 2)
    assert torch.equal(mgicon.predict_map(net, x, y), mgicon.predict_map(again, x, y))


@pytest.mark.parametrize(
    "content, message",
    [(b"not a checkpoint", "not a readable torch checkpoint"), (None, "no such checkpoint file")],
)
def test_bad_checkpoint_names_the_file(tmp_path, content, message):
    path = tmp_path / "bad.trch"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        load_network(path)
    assert str(path) in str(err.value)


def test_foreign_state_dict_is_rejected(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a GradICON network"):
        load_network(path)


def test_predict_map_leaves_training_mode_and_statistics_alone():
    net = randomize_weights(mgicon.build_network("tiny"), seed=1).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = smooth_volume((32,) * 3, 1)
    mgicon.predict_map(net, x, x)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


class _Translation(nn.Module):
    """A registration step that predicts a constant displacement and records the images it saw."""

    def __init__(self, t):
        super().__init__()
        self.t = torch.tensor(t).view(1, 3, 1, 1, 1)
        self.seen = None

    def forward(self, moving, fixed):
        self.seen = moving
        return DisplacementChain([self.t.expand(moving.shape[0], 3, *moving.shape[2:]).clone()])


def test_two_step_is_eq1_composition():
    shape = (12, 12, 12)
    first, second = _Translation([0.05, 0.0, -0.05]), _Translation([0.0, 0.1, 0.0])
    a = smooth_volume(shape, 4)
    phi = TwoStep(first, second)(a, a).on_grid(shape)
    assert torch.allclose(phi, identity_grid(shape) + first.t + second.t, atol=1e-6)
    assert torch.allclose(second.seen, warp(a, identity_grid(shape) + first.t), atol=1e-6)


def test_unet_output_starts_at_zero():
    u = UNet((2, 4, 8, 16), (4, 8, 8))
    x = torch.rand(1, 1, 17, 17, 17)
    assert torch.equal(u(x, x), torch.zeros(1, 3, 17, 17, 17))
