"""The upstream oracle: upstream's network with non-trivial random weights, and ours loaded from it."""

from __future__ import annotations

import mgicon
from mgicon.testing import randomize_weights


def upstream_network(n: int, similarity: str = "lncc2", include_last_step: bool = True, seed: int = 1, **options):
    """upstream's ``make_network`` at n³ with randomised (non-identity) weights, in eval mode; ``options`` are
    ``make_network``'s (``dice_loss_weight``, ``loss_function_masking``)."""
    import icon_registration as icon
    import unigradicon

    loss = {
        "lncc": icon.LNCC(sigma=5),
        "lncc2": icon.losses.SquaredLNCC(sigma=5),
        "mind": icon.losses.MINDSSC(radius=2, dilation=2),
    }[similarity]
    net = unigradicon.make_network([1, 1, n, n, n], include_last_step=include_last_step, loss_fn=loss, **options)
    randomize_weights(net.regis_net, seed)
    return net.eval()


def ours_from(upstream, n: int, include_last_step: bool = True) -> mgicon.RegistrationNetwork:
    net = mgicon.build_network("paper", input_shape=(n, n, n), include_last_step=include_last_step)
    net.load_state_dict(upstream.regis_net.state_dict(), strict=True)
    return net.eval()
