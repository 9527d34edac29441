"""Training: the one explicit loop (:mod:`~mmv_torch.train.loop`: :func:`train`, :func:`train_step`),
the ``--data`` specs it reads (:mod:`~mmv_torch.train.data`) and the deterministic, resumable sample
order (:mod:`~mmv_torch.train.sampling`)."""

from mmv_torch.train.data import build_train_data, parse_data_spec
from mmv_torch.train.loop import StepResult, TrainingDivergedError, TrainState, lr_at, train, train_step
from mmv_torch.train.sampling import TrainData, TrainSource, make_train_loader

__all__ = ["StepResult", "TrainData", "TrainSource", "TrainState", "TrainingDivergedError", "build_train_data",
           "lr_at", "make_train_loader", "parse_data_spec", "train", "train_step"]
