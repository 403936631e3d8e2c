"""learn_then_frozen: the structure learns in the first epochs, then trains frozen; the CLI's
budgeted default."""
import argparse

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import maskfx
from maskfx.cli.train import _train_arguments, phases
from maskfx.errors import UserError
from maskfx.techniques.channels.rewrite import gates_of
from maskfx.train import Data, Phase, budget_structure_epochs, fit, learn_then_frozen


def test_all_epochs_learning_is_the_two_phase_plan():
    assert learn_then_frozen(3, 0.05, 0.5, 2, 0.01) == [Phase(3, 0.05, 0.5), Phase(2, 0.01, freeze_first=True)]


def test_the_structure_freezes_after_its_epochs_and_the_weights_train_on_at_the_rate():
    assert learn_then_frozen(3, 0.05, 0.5, 2, 0.01, structure_epochs=1) == [
        Phase(1, 0.05, 0.5), Phase(2, 0.05, freeze_first=True), Phase(2, 0.01)]
    # nothing after the structure epochs: the freeze still happens, in an empty phase
    assert learn_then_frozen(2, 0.05, 0.5, 0, 0.01) == [Phase(2, 0.05, 0.5), Phase(0, 0.01, freeze_first=True)]


@pytest.mark.parametrize("structure", [4, -1, 1.5])
def test_structure_epochs_outside_the_learning_epochs_are_refused(structure):
    with pytest.raises(UserError, match="structure epochs must be an int from 0 to the 3"):
        learn_then_frozen(3, 0.05, 0.5, 2, 0.01, structure_epochs=structure)


def test_fit_freezes_a_budgets_gates_after_the_structure_epochs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    net = maskfx.transform(model, channels=maskfx.ChannelConfig(round_to=1), example_inputs=(torch.randn(2, 3, 8, 8),),
                           budget=maskfx.Budget(macs=0.7))
    train = TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,)))
    frozen_after = []
    fit(net, Data(train, train, 4, (3, 8, 8)), learn_then_frozen(2, 0.05, 0.5, 1, 0.01, structure_epochs=1),
        device=torch.device("cpu"), batch_size=8, evaluate=False,
        on_epoch=lambda record: frozen_after.append(all(g.is_frozen for g in gates_of(net).values())))
    assert frozen_after == [False, True, True]
    pruned = maskfx.collapse(net.eval(), "prune", example_inputs=(torch.randn(2, 3, 8, 8),))
    assert maskfx.summary(pruned).collapse.achieved <= 0.7


def _args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _train_arguments(parser)
    return parser.parse_args(["--out", "unused", *flags])


def test_the_command_line_freezes_a_budgets_structure_before_the_last_epoch_and_anything_else_after_all():
    budgeted = phases(_args("--epochs", "3", "--finetune-epochs", "2"), transformed=True, budgeted=True)
    assert [(p.epochs, p.mask_lr > 0, p.freeze_first) for p in budgeted] == [(2, True, False), (1, False, True),
                                                                            (2, False, False)]
    assert [budget_structure_epochs(e) for e in (0, 1, 2, 3, 5)] == [0, 1, 1, 2, 4]
    plain = phases(_args("--epochs", "3", "--finetune-epochs", "2"), transformed=True)
    assert [(p.epochs, p.mask_lr > 0, p.freeze_first) for p in plain] == [(3, True, False), (2, False, True)]
    chosen = phases(_args("--epochs", "3", "--structure-epochs", "2"), transformed=True, budgeted=True)
    assert [p.epochs for p in chosen] == [2, 1, 2]
