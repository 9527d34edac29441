"""mmv-torch: Self-Supervised MultiModal Versatile Networks (MMV) in PyTorch.

Public API: :func:`create_model`, :class:`MMV`, the losses (:func:`nce_loss`, :func:`milnce_loss`,
:func:`mmv_loss`) and the config presets. Everything else is imported from its module.
"""

from mmv_torch.config import PRESETS, Config, ModelConfig, get_preset
from mmv_torch.losses import milnce_loss, mmv_loss, nce_loss
from mmv_torch.models.mmv import MMV
from mmv_torch.weights.resolve import create_model

__version__ = "0.2.0"

__all__ = ["MMV", "PRESETS", "Config", "ModelConfig", "create_model", "get_preset", "milnce_loss", "mmv_loss",
           "nce_loss", "__version__"]
