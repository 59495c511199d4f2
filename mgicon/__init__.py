"""mgicon: multiGradICON, a foundation model for mono- and multimodal 3-D medical image registration.

Public API::

    net = mgicon.build_network(preset="paper", input_shape=(175, 175, 175))
    phi = mgicon.predict_map(net, moving, fixed)        # (B, 3, *spatial), [0,1] coordinates
    mgicon.losses.squared_lncc(a, b); mgicon.metrics.dice(x, y)

Conventions are stated once in :mod:`mgicon.maps`.
"""

from mgicon import losses, maps, metrics
from mgicon.network import (
    NetworkConfig,
    RegistrationNetwork,
    build_network,
    load_network,
    save_checkpoint,
)
from mgicon.network.inference import predict_map
from mgicon.optimize import instance_optimize

__version__ = "0.1.0"

__all__ = [
    "NetworkConfig",
    "RegistrationNetwork",
    "build_network",
    "instance_optimize",
    "load_network",
    "losses",
    "maps",
    "metrics",
    "predict_map",
    "save_checkpoint",
]
