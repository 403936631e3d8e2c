"""Phase schedules: learn structure and weights jointly, freeze the structure, fine-tune.

The papers' recipes are named presets (``preset("maskconnect-resnet")``), taken from MaskConnect's
appendix A.6 and GateConnect's appendix E: four phases -- joint learning of weights (lr 0.1) and
masks/gates, then the top-K connectivity frozen and the weights fine-tuned at 0.1, 0.01 and 0.001
-- with SGD at momentum 0.9 on the weights and plain gradient descent on the masks (the papers'
update ``m <- clip(m - lr * dL/dm)``; see ``param_groups``). ``fit`` trains a net through them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from maskfx.errors import UserError


@dataclass(frozen=True)
class Phase:
    epochs: int
    lr: float
    mask_lr: float = 0.0
    freeze_first: bool = False  # call maskfx.freeze before this phase


def _four_phases(lr: float, mask_lr: float, epochs: tuple[int, ...]) -> tuple[Phase, ...]:
    if len(epochs) != 4 or not all(isinstance(e, int) and e >= 0 for e in epochs):
        raise UserError(f"epochs must be four ints >= 0, got {epochs!r}")
    return (Phase(epochs[0], lr, mask_lr), Phase(epochs[1], lr, freeze_first=True),
            Phase(epochs[2], lr / 10), Phase(epochs[3], lr / 100))


def learn_then_frozen(epochs: int, lr: float, mask_lr: float, finetune_epochs: int, finetune_lr: float,
                      structure_epochs: int | None = None) -> list[Phase]:
    """``epochs`` at ``lr`` of which the first ``structure_epochs`` (default: all) learn the
    structure with the weights; then ``freeze``, the rest at ``lr`` on the frozen structure, and
    ``finetune_epochs`` at ``finetune_lr``: the papers' four-phase shape (joint learning, frozen at
    ``lr``, lower rates).

    A budget wants the structure frozen before training ends (``budget_structure_epochs``): its
    gates keep moving until their phase ends, so the weights meet the frozen structure only after
    it. Measured on the budget suite's trained start (resnet18, Fashion-MNIST, budget 0.5,
    ``round_to=8``, 3 + 2 epochs, seeds 0-2): 3 structure epochs 73.5 / 79.1 / 78.1%, one 78.6 /
    79.2 / 76.7% (the net in eval mode just before the freeze, after 3: 58% and 54% on seeds 0 and
    2; the untouched model trained on: 80.1 / 80.8 / 80.2%)."""
    structure = epochs if structure_epochs is None else structure_epochs
    if isinstance(structure, bool) or not (isinstance(structure, int) and 0 <= structure <= epochs):
        raise UserError(f"structure epochs must be an int from 0 to the {epochs} learning epochs, got {structure!r}")
    frozen = [p for p in (Phase(epochs - structure, lr), Phase(finetune_epochs, finetune_lr)) if p.epochs]
    frozen = frozen or [Phase(0, finetune_lr)]  # nothing after the freeze: it still happens
    return [Phase(structure, lr, mask_lr), replace(frozen[0], freeze_first=True), *frozen[1:]]


def budget_structure_epochs(epochs: int) -> int:
    """The structure epochs a budget learns in by default: all of ``epochs`` but the last, so the
    weights train at least one epoch at full rate on the structure that ships (one when there is
    one). Measured at 3 learning epochs, budget 0.5, ``round_to=16``: on the budget suite's resnet18
    start (Fashion-MNIST, seeds 0 / 1) one epoch shipped 78.4 / 79.1%, all three 72.9 / 79.0%, all
    but the last 77.7 / 78.8%; on the demo's small ResNeXt (digits, one seed, its gates choosing
    whole branches) 80.0%, 88.6% and 85.3%. All but the last never collapsed where all did, and lost
    less than one did where one lost. (Measured with distillation at T = 4, which made freshly
    pruned models diverge of itself: ``maskfx.train.distill``.) Re-measured at T = 2 on the suite's
    16-epoch start, seeds 0 / 1, points against the untouched model: at budget 0.5 one epoch
    -0.05 / -0.98, all but the last -0.34 / -0.61, all three -0.64 / -0.46; at 0.35 -0.24 / -1.04,
    -0.33 / -0.97, -0.30 / -0.68 (at the gates' former momentum 0.9; at 0.5 one epoch ends at
    0.87 of the MACs and shipped -0.91 on 3 seeds at budget 0.303, against -0.75 for two: see
    ``maskfx.budget``). No choice is ahead on resnet18 (one epoch leaves 0.94 of the
    MACs to freeze's selection and loses no more), so the ResNeXt's need for steps decides."""
    return max(1, epochs - 1) if epochs else 0


def maskconnect_recipe(lr: float = 0.1, mask_lr: float = 0.3,
                       epochs: tuple[int, int, int, int] = (30, 30, 10, 10)) -> list[Phase]:
    """MaskConnect's recipe (paper, appendix A.6): joint learning at ``lr``/``mask_lr``; then
    freeze the top-K connectivity and fine-tune at ``lr``, ``lr/10`` and ``lr/100``."""
    return list(_four_phases(lr, mask_lr, epochs))


@dataclass(frozen=True)
class Preset:
    """A paper's training recipe: its phases, the SGD settings it states, the fan-in K it uses with
    them, and where it says so (``source``)."""

    phases: tuple[Phase, ...]
    batch_size: int
    momentum: float
    weight_decay: float
    fan_in: int
    source: str


_RESNEXT_CIFAR = Preset(_four_phases(0.1, 0.2, (120, 100, 50, 50)), 128, 0.9, 5e-4, 4,
                        "MaskConnect A.6 / GateConnect E.1, CIFAR ResNeXt: K = 4 of C = 8 (Fig. 3 / Fig. 2)")
_RESNEXT_IMAGENET = Preset(_four_phases(0.1, 0.2, (30, 30, 30, 30)), 256, 0.9, 1e-4, 16,
                           "MaskConnect A.6 / GateConnect E.2, ImageNet ResNeXt: K = C/2 = 16 of 32 (Table 3)")

# ResNeXt recipes are GateConnect's in maskfx (the branch-level connectivity of MaskConnect's section 3.5),
# so they answer to both names.
PRESETS: dict[str, Preset] = {
    "maskconnect-resnet": Preset(_four_phases(0.1, 0.3, (30, 30, 10, 10)), 128, 0.9, 1e-4, 10,
                                 "MaskConnect A.6, CIFAR-100 ResNet: K = 10 of 18 blocks (ResNet-38, Fig. 2)"),
    "maskconnect-resnet-imagenet": Preset(_four_phases(0.1, 0.3, (30, 30, 30, 30)), 256, 0.9, 1e-4, 10,
                                          "MaskConnect A.6 and 4.2, ImageNet ResNet-50: K = 10 of 16 blocks"),
    "maskconnect-resnext": _RESNEXT_CIFAR,
    "maskconnect-resnext-imagenet": _RESNEXT_IMAGENET,
    "gateconnect-cifar": _RESNEXT_CIFAR,
    "gateconnect": _RESNEXT_IMAGENET,
}


def preset(name: str) -> Preset:
    """The named paper recipe; ``ValueError`` lists the names for an unknown one."""
    if name not in PRESETS:
        raise UserError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]

