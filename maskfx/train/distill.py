"""Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural
Network"): the student learns from a frozen teacher's softened class probabilities as well as
from the labels.

The softened probabilities carry what the labels do not -- which wrong classes the teacher finds
nearly right -- so a small or restructured network (a masked, clustered or pruned one) can
recover much of a larger one's accuracy from them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskfx.errors import UserError


# The KL term's gradient on a student logit is ``alpha * T * (student - teacher probability)``
# (``distillation_loss``): at T = 4, the earlier default, it is up to four times cross-entropy's,
# and a freshly pruned resnet18 at lr 0.05 diverged in its first epoch (10.6% test accuracy after
# it, loss 4.0) where T = 2, CoFi's ``distill_temp``, trained on (Torch-Pruning's L2 arm of the
# budget suite, seed 0 at 0.75 of the MACs: 71.4% shipped at T = 4, 79.4% at T = 2, 80.4% not
# distilled, the untouched model 80.1%).
DEFAULT_TEMPERATURE, DEFAULT_ALPHA = 2.0, 0.5


@dataclass(frozen=True)
class Distillation:
    """What ``run_epoch`` distills from: a ``teacher`` whose logits the student matches at
    ``temperature``, the KL term weighted ``alpha`` and cross-entropy on the labels ``1 - alpha``.

    The teacher is never trained: ``run_epoch`` runs it in eval mode under ``torch.no_grad``.
    """

    teacher: nn.Module
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, nn.Module):
            raise UserError(f"the distillation teacher must be a torch.nn.Module, got {type(self.teacher).__name__}")
        temperature = self.temperature
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise UserError(f"distillation temperature must be a finite number > 0, got {temperature!r}")
        if not (isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1):
            raise UserError(f"distillation alpha must be a number in [0, 1], got {self.alpha!r}")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    Dividing the logits by ``T > 1`` softens both distributions, so the teacher's small
    probabilities for the wrong classes weigh in the KL term. The same division scales that
    term's gradient by ``1 / T^2``; the factor ``T^2`` undoes it, so ``alpha`` balances the two
    terms alike at every temperature. The KL term is averaged over the batch (``"batchmean"``,
    the true KL per sample, as cross-entropy's mean is). Logits are compared in float32: under
    bf16 autocast they arrive in bf16, too coarse for the small differences of softened logits.
    """
    student, teacher = student_logits.float() / temperature, teacher_logits.float() / temperature
    kl = F.kl_div(F.log_softmax(student, dim=1), F.log_softmax(teacher, dim=1), reduction="batchmean", log_target=True)
    return (1 - alpha) * F.cross_entropy(student_logits.float(), labels) + alpha * temperature ** 2 * kl
