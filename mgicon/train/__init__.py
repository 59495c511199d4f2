"""Training: the GradICON loop with loss randomization, augmentation, the two-stage schedule, resume and DDP."""

from mgicon.train.data import Batch, TrainingData
from mgicon.train.loop import PairModel, TrainConfig, build_model, train, train_step

__all__ = ["Batch", "PairModel", "TrainConfig", "TrainingData", "build_model", "train", "train_step"]
