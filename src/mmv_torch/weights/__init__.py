"""Everything that holds weights: the weights folder (:mod:`~mmv_torch.weights.folder`, the one owner
of ``config.json`` + ``model.safetensors`` + ``vocab.txt``), training checkpoints and the export
(:mod:`~mmv_torch.weights.checkpoint`), the ``--checkpoint`` resolver and :func:`create_model`
(:mod:`~mmv_torch.weights.resolve`), the converter of DeepMind's released checkpoints
(:mod:`~mmv_torch.weights.convert`, with its restricted unpickler) and the recovery of a word table's
vocabulary (:mod:`~mmv_torch.weights.vocab_match`)."""

from mmv_torch.weights.checkpoint import export_model, load_checkpoint, save_checkpoint
from mmv_torch.weights.convert import convert_checkpoint, load_official
from mmv_torch.weights.folder import is_weights_folder, load_model, read_config, write_weights_folder
from mmv_torch.weights.resolve import ResolvedCheckpoint, checkpoint_tokenizer, create_model, resolve_checkpoint
from mmv_torch.weights.vocab_match import match_vocabulary, run_vocab_match

__all__ = [
    "ResolvedCheckpoint", "checkpoint_tokenizer", "convert_checkpoint", "create_model", "export_model",
    "is_weights_folder", "load_checkpoint", "load_model", "load_official", "match_vocabulary", "read_config",
    "resolve_checkpoint", "run_vocab_match", "save_checkpoint", "write_weights_folder",
]
