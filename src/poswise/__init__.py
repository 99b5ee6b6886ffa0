"""poswise: fast full-batch gradient descent and the position-wise optimizer for MLPs.

The hot loops (dense products through BLAS, activation derivatives, the layer-span
backward pass and the in-place update) are Cython kernels that release the GIL; the
classes here are a thin layer over them.
"""
from .io import ModelFileError, load_model as load, read_model_file, save_model
from .network import MLP
from .session import TrainingSession
from .trainers import (SCHEDULES, DivergenceWarning, GradientDescent, History, LayerwiseGD,
                       PositionWise)
from .updates import SGD, Adam, AdamW, RMSprop, UpdateRule

__version__ = "0.1.0"

__all__ = ["MLP", "GradientDescent", "PositionWise", "LayerwiseGD", "SCHEDULES",
           "TrainingSession", "History", "DivergenceWarning",
           "SGD", "Adam", "AdamW", "RMSprop", "UpdateRule",
           "load", "save_model", "read_model_file", "ModelFileError", "__version__"]
