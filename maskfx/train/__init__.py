"""Training support: parameter groups, offline demo data, a reference loop."""
from maskfx.train.data import digits_loaders, digits_tensors
from maskfx.train.loop import accuracy, predict, resolve_device, train_epochs
from maskfx.train.params import param_groups, structure_parameters
from maskfx.train.phases import Phase, maskconnect_recipe, run_phases

__all__ = ["Phase", "accuracy", "digits_loaders", "digits_tensors", "maskconnect_recipe", "param_groups", "predict",
           "resolve_device", "run_phases", "structure_parameters", "train_epochs"]
