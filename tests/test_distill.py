"""Knowledge distillation: the loss is Hinton et al.'s, a student recovers a planted teacher from
its soft targets alone, the teacher comes out of training untouched, and bad settings are refused."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from maskfx.errors import UserError
from maskfx.train import Data, Distillation, NonFiniteLossError, Phase, ddp, fit
from maskfx.train.distill import distillation_loss
from maskfx.train.loop import run_epoch

CPU = torch.device("cpu")
FEATURES, CLASSES = 8, 4


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_distillation_loss_is_weighted_cross_entropy_plus_t_squared_kl():
    student = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.8, -1.2]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [-1.0, 1.5, 0.5]])
    labels, t, alpha = torch.tensor([2, 0]), 2.0, 0.3
    ce = sum(-math.log(softmax(row)[y]) for row, y in zip(student.tolist(), labels.tolist())) / 2
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p, q = softmax([v / t for v in t_row]), softmax([v / t for v in s_row])
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / 2  # batchmean: the KL per sample
    expected = (1 - alpha) * ce + alpha * t ** 2 * kl
    assert distillation_loss(student, teacher, labels, t, alpha).item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(distillation_loss(student, teacher, labels, 4.0, 0.0), F.cross_entropy(student, labels))


def planted_teacher() -> nn.Linear:
    """A fixed random linear classifier, confident enough (logits of std ~3) to have clear argmaxes."""
    generator, teacher = torch.Generator().manual_seed(1), nn.Linear(FEATURES, CLASSES)
    with torch.no_grad():
        teacher.weight.copy_(torch.randn(CLASSES, FEATURES, generator=generator))
        teacher.bias.copy_(torch.randn(CLASSES, generator=generator))
    return teacher


def random_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs and labels drawn independently of them: nothing to learn from the labels."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, FEATURES, generator=generator), torch.randint(0, CLASSES, (n,), generator=generator)


def distilled_student(alpha: float, epochs: int = 20) -> nn.Linear:
    torch.manual_seed(0)
    student = nn.Linear(FEATURES, CLASSES)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(TensorDataset(*random_data(1024, seed=2)), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(3))
    distill = Distillation(planted_teacher(), temperature=4.0, alpha=alpha)
    for _ in range(epochs):
        run_epoch(student, loader, optimizer, CPU, show=False, distill=distill)
    return student


@torch.no_grad()
def against_teacher(student: nn.Module) -> tuple[float, float]:
    """Max |probability difference| to the teacher and argmax agreement, on held-out inputs."""
    inputs, _ = random_data(4096, seed=4)
    teacher, learned = F.softmax(planted_teacher()(inputs), 1), F.softmax(student(inputs), 1)
    return (teacher - learned).abs().max().item(), (teacher.argmax(1) == learned.argmax(1)).float().mean().item()


def test_a_student_recovers_the_teacher_from_soft_targets_alone():
    # The student can represent the teacher exactly and the KL term is convex in its weights, so
    # alpha=1 converges to the teacher's probabilities up to float32 rounding: a max difference of
    # 3.6e-7 to 6.6e-7 over 8 seeds of teacher, data and student (20 epochs; 6.7e-4 after 10).
    # 1e-5 leaves room for another BLAS's rounding and still fails a student only half-trained.
    difference, agreement = against_teacher(distilled_student(alpha=1.0))
    assert difference < 1e-5 and agreement > 0.95
    # The labels say nothing about the inputs: learning them alone agrees with the teacher about as
    # often as chance (0.11 to 0.37 over the same seeds; 1/4 expected) and its probabilities are far off.
    difference, agreement = against_teacher(distilled_student(alpha=0.0))
    assert difference > 0.5 and agreement < 0.6


def teacher_with_modes() -> nn.Sequential:
    """A teacher with BatchNorm statistics and dropout, which train mode would change or
    randomise, in mixed modes (one BatchNorm kept in eval), one parameter frozen by its owner."""
    torch.manual_seed(5)
    teacher = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.ReLU(),
                            nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, CLASSES))
    with torch.no_grad():  # non-trivial running statistics
        teacher(torch.randn(64, FEATURES) * 3)
    teacher[5].eval()
    teacher[0].bias.requires_grad_(False)
    return teacher


def untouched(teacher: nn.Module, digest: str, modes: list[bool], requires: list[bool]) -> bool:
    return (ddp.state_digest(teacher) == digest and [m.training for m in teacher.modules()] == modes
            and [p.requires_grad for p in teacher.parameters()] == requires
            and all(p.grad is None for p in teacher.parameters()))


def snapshot(teacher: nn.Module) -> tuple[str, list[bool], list[bool]]:
    """Bitwise state (weights and buffers), every module's mode, every parameter's requires_grad."""
    return (ddp.state_digest(teacher), [m.training for m in teacher.modules()],
            [p.requires_grad for p in teacher.parameters()])


def test_fit_leaves_the_teacher_bitwise_unchanged_and_in_its_modes():
    teacher = teacher_with_modes()
    before = snapshot(teacher)
    inputs, labels = random_data(256, seed=6)
    data = Data(TensorDataset(inputs, labels), TensorDataset(inputs[:64], labels[:64]), CLASSES, (FEATURES,))
    student = nn.Linear(FEATURES, CLASSES)
    initial = student.weight.detach().clone()
    history = fit(student, data, [Phase(2, lr=0.1)], device=CPU, batch_size=32, teacher=teacher, distill_alpha=0.7)
    assert untouched(teacher, *before)
    assert len(history) == 2 and not torch.equal(student.weight, initial)


def test_the_teacher_gets_its_modes_back_when_an_epoch_stops():
    teacher, (inputs, labels) = teacher_with_modes(), random_data(64, seed=7)
    inputs[40] = float("nan")
    before = snapshot(teacher)
    student = nn.Linear(FEATURES, CLASSES)
    with pytest.raises(NonFiniteLossError, match="step 2"):
        run_epoch(student, DataLoader(TensorDataset(inputs, labels), batch_size=32),
                  torch.optim.SGD(student.parameters(), lr=0.1), CPU, show=False, distill=Distillation(teacher))
    assert untouched(teacher, *before)


def test_a_ddp_student_distills_as_a_plain_one(tmp_path):
    """DDP wraps the student only; one rank in a gloo group, so its gradient average is the gradient."""
    loader = DataLoader(TensorDataset(*random_data(256, seed=8)), batch_size=32)
    teacher = teacher_with_modes()
    before = snapshot(teacher)
    students = []
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/group", rank=0, world_size=1)
    try:
        for wrap in (False, True):
            torch.manual_seed(0)
            student = nn.Linear(FEATURES, CLASSES)
            net = DistributedDataParallel(student) if wrap else student
            run_epoch(net, loader, torch.optim.SGD(student.parameters(), lr=0.1), CPU, show=False,
                      distill=Distillation(teacher))
            students.append(student)
    finally:
        torch.distributed.destroy_process_group()
    assert torch.allclose(students[0].weight, students[1].weight, atol=1e-6)
    assert untouched(teacher, *before)


@pytest.mark.parametrize("settings", [
    dict(teacher=lambda x: x), dict(temperature=0.0), dict(temperature=-1.0), dict(temperature=math.inf),
    dict(temperature=math.nan), dict(temperature="4"), dict(alpha=-0.1), dict(alpha=1.5), dict(alpha=math.nan),
    dict(alpha=None)])
def test_bad_settings_are_refused(settings):
    with pytest.raises(UserError) as error:
        Distillation(**{"teacher": nn.Linear(2, 2), **settings})
    assert "\n" not in str(error.value)


def test_fit_refuses_bad_settings_before_training():
    inputs, labels = random_data(64, seed=9)
    data = Data(TensorDataset(inputs, labels), TensorDataset(inputs, labels), CLASSES, (FEATURES,))
    student = nn.Linear(FEATURES, CLASSES)
    initial = student.weight.detach().clone()
    with pytest.raises(UserError, match="alpha"):
        fit(student, data, [Phase(1, lr=0.1)], device=CPU, teacher=planted_teacher(), distill_alpha=2.0)
    assert torch.equal(student.weight, initial)


def test_a_teacher_the_optimizer_trains_is_refused():
    """Distilling from the student itself (or a part of it) would train the teacher along."""
    student = nn.Sequential(nn.Linear(FEATURES, CLASSES))
    loader = DataLoader(TensorDataset(*random_data(32, seed=10)), batch_size=32)
    with pytest.raises(UserError, match="copy"):
        run_epoch(student, loader, torch.optim.SGD(student.parameters(), lr=0.1), CPU, show=False,
                  distill=Distillation(student[0]))
