"""The networks FairPrune prunes: the paper's VGG-11 (built in, the default) and every torchvision
classification architecture, by name; the input they see; weights files; their classification head.

* :mod:`.config` - :class:`ModelConfig` (architecture name and shape), checked on entry
* :mod:`.registry` - ``@register_model``, :func:`build_model`, :func:`list_models`, file checks
* :mod:`.vgg` - the built-in VGG-11 that BackPACK differentiates
* :mod:`.torchvision_models` - torchvision's classifiers, never with downloaded weights
* :mod:`.weights` - a user's ``--weights`` file (state dict, safetensors), read without unpickling
* :mod:`.head` - the last linear layer and the features feeding it (the baselines' head)
* :mod:`.inputs` - uint8 images -> the normalised input
"""

from __future__ import annotations

from .config import BUILTIN, ModelConfig, ModelFileError, config_from_file
from .head import find_head, forward_with_features
from .inputs import INPUT_MEAN, INPUT_STD, normalise, to_model_input
from .registry import build_model, check_input_size, check_state_shapes, list_models, register_model
from .vgg import VGG
from .weights import initial_state, read_weights

__all__ = [
    "BUILTIN",
    "INPUT_MEAN",
    "INPUT_STD",
    "VGG",
    "ModelConfig",
    "ModelFileError",
    "build_model",
    "check_input_size",
    "check_state_shapes",
    "config_from_file",
    "find_head",
    "forward_with_features",
    "initial_state",
    "list_models",
    "normalise",
    "read_weights",
    "register_model",
    "to_model_input",
]
