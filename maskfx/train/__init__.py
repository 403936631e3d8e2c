"""Training support: parameter groups, data, loops with phases, checkpoints and DDP."""
from maskfx.train.checkpoint import Checkpoint, CheckpointError, Recipe, load_checkpoint, save_checkpoint
from maskfx.train.data import Data, DataError, digits_tensors, load_data
from maskfx.train.distill import Distillation
from maskfx.train.fit import fit
from maskfx.train.loop import NonFiniteLossError, accuracy, predict, resolve_device, train_epochs, train_one_epoch
from maskfx.train.memory import reuse_freed_memory
from maskfx.train.params import clip_masks_after_steps, param_groups, structure_parameters
from maskfx.train.phases import (PRESETS, Phase, Preset, budget_structure_epochs, learn_then_frozen, maskconnect_recipe,
                                 preset)
from maskfx.train.recalibrate import recalibrate

__all__ = ["Checkpoint", "CheckpointError", "Data", "DataError", "Distillation", "NonFiniteLossError", "PRESETS",
           "Phase", "Preset", "Recipe", "accuracy", "budget_structure_epochs", "clip_masks_after_steps",
           "digits_tensors", "fit", "learn_then_frozen", "load_checkpoint", "load_data", "maskconnect_recipe",
           "param_groups", "predict", "preset", "recalibrate", "resolve_device", "reuse_freed_memory", "save_checkpoint",
           "structure_parameters", "train_epochs", "train_one_epoch"]
