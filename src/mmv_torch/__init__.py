"""mmv-torch: Self-Supervised MultiModal Versatile Networks (MMV) in PyTorch.

Public API: :func:`load` (``model, preprocess, tokenizer = mmv_torch.load(checkpoint)``),
:func:`create_model`, :func:`zero_shot_classifier`, :class:`MMV` (with ``encode_video``, ``encode_audio``,
``encode_text``), the losses (:func:`nce_loss`, :func:`milnce_loss`, :func:`mmv_loss`) and the config
presets. Everything else is imported from its module.
"""

from mmv_torch.api import Preprocess, TextTokenizer, load
from mmv_torch.config import PRESETS, Config, ModelConfig, get_preset
from mmv_torch.eval.zeroshot import zero_shot_classifier
from mmv_torch.losses import milnce_loss, mmv_loss, nce_loss
from mmv_torch.models.mmv import MMV
from mmv_torch.version import __version__
from mmv_torch.weights.resolve import create_model

__all__ = ["MMV", "PRESETS", "Config", "ModelConfig", "Preprocess", "TextTokenizer", "create_model", "get_preset",
           "load", "milnce_loss", "mmv_loss", "nce_loss", "zero_shot_classifier", "__version__"]
