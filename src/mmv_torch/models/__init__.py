"""Network maths only (no file I/O): the video towers (S3D-G, TSM-ResNetV2, R(2+1)D), the audio ResNetV2,
the text tower, the projection heads, :class:`MMV` (towers + heads + graph) and the network half of
video → image deflation (:mod:`~mmv_torch.models.deflate`). Weights are loaded by :mod:`mmv_torch.weights`."""

from mmv_torch.models.audio_resnet import AudioResNet
from mmv_torch.models.heads import ProjectionHead
from mmv_torch.models.mmv import MMV, build_audio_backbone, build_video_backbone
from mmv_torch.models.r2plus1d import R2Plus1D
from mmv_torch.models.s3d import S3D
from mmv_torch.models.text import TextTower
from mmv_torch.models.tsm_resnet import TSMResNet

__all__ = ["MMV", "S3D", "AudioResNet", "ProjectionHead", "R2Plus1D", "TSMResNet", "TextTower", "build_audio_backbone",
           "build_video_backbone"]
