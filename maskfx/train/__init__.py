"""Training support: parameter groups, offline demo data, a reference loop."""
from maskfx.train.data import digits_loaders, digits_tensors
from maskfx.train.loop import accuracy, predict, resolve_device, train_epochs
from maskfx.train.params import param_groups, structure_parameters

__all__ = ["accuracy", "digits_loaders", "digits_tensors", "param_groups", "predict", "resolve_device",
           "structure_parameters", "train_epochs"]
