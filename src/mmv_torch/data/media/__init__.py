"""Media in, tensors out: decoding video, audio and images (PyAV), the log-mel front-ends, clip
transforms and the batch augmentation. Nothing here reads manifests or knows about data sets."""

from mmv_torch.data.media.audio import FRONTENDS, LogMelSpectrogram, log_mel_spectrogram
from mmv_torch.data.media.batch_augment import augment_batch, collate_samples
from mmv_torch.data.media.decode import (
    Clip,
    DecodeError,
    MediaInfo,
    load_audio,
    load_clip,
    load_clips,
    load_image,
    probe,
)
from mmv_torch.data.media.suffixes import MEDIA_SUFFIXES, modality_of
from mmv_torch.data.media.transforms import dmvr_train_transform, eval_transform, train_transform

__all__ = [
    "FRONTENDS", "MEDIA_SUFFIXES", "Clip", "DecodeError", "LogMelSpectrogram", "MediaInfo", "augment_batch",
    "collate_samples", "dmvr_train_transform", "eval_transform", "load_audio", "load_clip", "load_clips", "load_image",
    "log_mel_spectrogram", "modality_of", "probe", "train_transform",
]
