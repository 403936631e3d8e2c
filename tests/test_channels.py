"""Channel gates: which channels go together, exact folding and pruning, a planted test of what
closes, and the budget's selection, errors and landing."""
import functools
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

import maskfx
from maskfx.budget import GROWTH, budget_penalty
from maskfx.config import DEEP_CUT, DEEP_CUT_MULTIPLIER
from maskfx.measure import count_macs
from maskfx.techniques.channels.config import ESTIMATORS
from maskfx.techniques.channels.layers import GAMMA, ZETA, ChannelGate, ChannelSpace
from maskfx.techniques.channels.rewrite import gates_of
from maskfx.train.fit import gate_optimizer


def _busy_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics and affines away from identity, so a wrong fold or slice shows."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -0.2, 0.2), (module.running_var, 0.5, 1.5),
                                      (module.weight.data, 0.5, 1.5), (module.bias.data, -0.2, 0.2)):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model.eval()


def _random_gates(net, seed: int = 0) -> None:
    """Gates spread over closed (exactly 0), fractional and open eval values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gates_of(net).values():
            gate.log_alpha.copy_(torch.randn(gate.log_alpha.shape, generator=generator) * 3)


def _within_contract(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


class ConcatAndSharedAdds(nn.Module):
    """A concat of two convolutions read by one, and three convolutions joined by two adds."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(3, 24, 3, padding=1)
        self.bn_a, self.bn_b = nn.BatchNorm2d(16), nn.BatchNorm2d(24)
        self.mix = nn.Conv2d(40, 32, 1)
        self.p, self.q, self.r = nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 32, 1), nn.Conv2d(32, 32, 1)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        y = torch.cat([torch.relu(self.bn_a(self.a(x))), torch.relu(self.bn_b(self.b(x)))], dim=1)
        y = torch.relu(self.mix(y))
        z = self.p(y) + self.q(y)
        z = torch.relu(z + self.r(z))
        z = torch.relu(self.depthwise(z))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1))


def test_concat_and_shared_adds_make_the_expected_spaces():
    net = maskfx.transform(ConcatAndSharedAdds().eval(), channels=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    spaces = {gate.space.name: gate.space for gate in gates_of(net).values()}
    assert set(spaces) == {"channels of a", "channels of b", "channels of mix", "channels of p"}
    joined = spaces["channels of p"]  # p, q, r and the depthwise conv write one space
    assert [p.module for p in joined.producers] == ["p", "q", "r", "depthwise"]
    assert joined.grouped == ["depthwise"]
    assert {(r.module, r.offset) for r in spaces["channels of b"].readers} == {("mix", 16)}
    assert [p.norm for p in spaces["channels of a"].producers] == ["bn_a"]


@pytest.mark.parametrize("mode", ["expected", "prune"])
def test_concat_and_shared_adds_collapse_exactly(mode):
    torch.manual_seed(0)
    model = _busy_batchnorms(ConcatAndSharedAdds())
    x = torch.randn(4, 3, 8, 8)
    net = maskfx.transform(model, channels=True, example_inputs=(x,)).eval()
    with torch.no_grad():
        assert torch.equal(net(x), model(x))  # open gates: the original function
        _random_gates(net)
        want = net(x)
    deploy = maskfx.collapse(net, mode, example_inputs=(x,))
    with torch.no_grad():
        assert _within_contract(want, deploy(x))
    report = maskfx.summary(deploy).collapse
    assert report.exact
    if mode == "prune":
        assert report.after.macs < report.before.macs and deploy.mix.in_channels < 40
    else:
        assert report.after.parameters == maskfx.summary(net).params_original


ZOO = ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_frozen_gates_prune_exactly_and_export(name, tmp_path):
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = _busy_batchnorms(getattr(torchvision.models, name)(weights=None, num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    net = maskfx.transform(model, channels=True, example_inputs=(x,), budget=maskfx.Budget(macs=0.6))
    assert gates_of(net)
    _random_gates(net)
    maskfx.freeze(net)
    net.eval()
    with torch.no_grad():
        want = net(x)
    deploy = maskfx.collapse(net, "prune", example_inputs=(x,))
    with torch.no_grad():
        assert _within_contract(want, deploy(x))
    macs = count_macs(deploy, x)
    assert 0.97 * 0.6 <= macs / net.meta["maskfx"].macs_original <= 0.6
    _, report = maskfx.export_onnx(deploy, tmp_path / "pruned.onnx", example_inputs=(x,))
    assert report.ok


def test_grouped_convolutions_lose_whole_groups():
    """A ResNeXt branch is a group of its grouped convolution: the unit that goes whole."""
    model = _busy_batchnorms(torchvision.models.resnext50_32x4d(weights=None, num_classes=10))
    x = torch.randn(1, 3, 32, 32)
    net = maskfx.transform(model, channels=True, example_inputs=(x,), budget=maskfx.Budget(macs=0.5))
    grouped = [g for g in gates_of(net).values() if g.space.grouped]
    assert grouped and all(g.space.unit == g.space.channels // 32 for g in grouped)  # 32 branches per module
    maskfx.freeze(net)
    deploy = maskfx.collapse(net, "prune")
    conv = deploy.get_submodule(grouped[0].space.grouped[0])
    # whole branches of 4 channels, one at a time: a group off ONNX Runtime's channel block is its own step
    assert conv.in_channels == conv.out_channels == conv.groups * 4 and conv.groups < 32


def _planted_task() -> tuple[torch.Tensor, torch.Tensor]:
    """256 seeded 8x8 images labelled by the sign of their centre's mean (every planted test's task)."""
    torch.manual_seed(0)
    x = torch.randn(256, 1, 8, 8)
    return x, (x[:, 0, 2:6, 2:6].mean((1, 2)) > 0).long()


class Planted(nn.Module):
    """Two stages of 32 channels; in the first, channels 0-15 carry the signal and 16-31 are
    zeroed at their BatchNorm (weight and bias 0): closing them changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.head = nn.Linear(32, 2)
        self.kill()

    @torch.no_grad()
    def kill(self) -> None:
        self.bn1.weight[16:] = 0
        self.bn1.bias[16:] = 0

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        return self.head(y.mean((2, 3)))


def _trained_planted(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``Planted`` initialised with ``seed`` and trained on the planted task (its dead half kept dead)."""
    x, labels = _planted_task()
    torch.manual_seed(seed)
    return _trained_start(Planted(), x, labels, steps=60), x, labels  # the live channels solve the task


def _agreement_with_the_plant(seed: int, estimator: str) -> float:
    """The share of the first space's 32 channels whose frozen state is the planted one (live
    kept, dead closed) after learning under a budget that the dead half meets."""
    model, x, labels = _trained_planted(seed)
    torch.manual_seed(seed)
    net = _learn_under_budget(model, x, labels, budget=0.55, round_to=4, estimator=estimator)
    first = next(g for g in gates_of(net).values() if g.space.name == "channels of conv1")
    return float((first.frozen_mask.bool() == (torch.arange(32) < 16)).float().mean())


def test_a_budget_closes_the_channels_that_carry_nothing():
    """Under a budget that the dead half of the first space meets, training closes exactly that half."""
    assert _agreement_with_the_plant(seed=0, estimator="hard-concrete") == 1.0


@pytest.mark.slow  # six trainings, about a minute on 2 cores
def test_the_planted_task_separates_the_estimators():
    """Why the hard-concrete is the default: over 3 seeds it closes the planted dead channels
    (measured 1.00 / 1.00 / 0.94 of the 32 right), while the straight-through Bernoulli gate, whose
    gradient is the loss's slope at the drawn mask rather than what closing a channel costs,
    closes live ones instead (0.12 / 0.25 / 0.19: worse than chance)."""
    agreement = {estimator: [_agreement_with_the_plant(seed, estimator) for seed in range(3)]
                 for estimator in ESTIMATORS}
    assert min(agreement["hard-concrete"]) >= 0.9, agreement
    assert max(agreement["straight-through"]) <= 0.5, agreement


class PlantedBranches(nn.Module):
    """A ResNeXt-like module of 8 branches (a grouped convolution, groups of 4 channels) between
    two 1x1 convolutions; branches 4-7 are zeroed at their BatchNorm, so they carry nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.reduce, self.bn1 = nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32)
        self.branches, self.bn2 = nn.Conv2d(32, 32, 3, padding=1, groups=8), nn.BatchNorm2d(32)
        self.expand, self.bn3 = nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 2)
        self.kill()

    @torch.no_grad()
    def kill(self) -> None:
        self.bn2.weight[16:] = 0
        self.bn2.bias[16:] = 0

    def forward(self, x):
        y = torch.relu(self.bn0(self.stem(x)))
        z = torch.relu(self.bn1(self.reduce(y)))
        z = torch.relu(self.bn2(self.branches(z)))
        y = torch.relu(y + self.bn3(self.expand(z)))
        return self.head(y.mean((2, 3)))


def _trained_start(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, steps: int) -> nn.Module:
    """``model`` trained on the planted task by SGD, what is planted dead kept dead (``kill``)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
        model.kill()
    return model


def _learn_under_budget(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, budget: float, round_to: int,
                        estimator: str = "hard-concrete"):
    """The budget's learning as ``fit`` runs it: weights by SGD, gates by Adam at its rate and momentum."""
    net = maskfx.transform(model.train(), channels=maskfx.ChannelConfig(round_to=round_to, estimator=estimator),
                           example_inputs=(x[:2],), budget=maskfx.Budget(macs=budget, warmup=0.5))
    groups = maskfx.param_groups(net, lr=0.01)
    weights = torch.optim.SGD([g for g in groups if g["name"] == "weights"], lr=0.01, momentum=0.9)
    gates = gate_optimizer([g for g in groups if g["name"] == "gates"])
    net.maskfx_budget.schedule(200)
    for _ in range(200):
        loss = nn.functional.cross_entropy(net(x), labels) + budget_penalty(net)
        weights.zero_grad()
        gates.zero_grad()
        loss.backward()
        weights.step()
        gates.step()
    maskfx.freeze(net)
    return net


def test_a_budget_closes_the_branches_that_carry_nothing():
    """The grouped convolution's unit is a branch. Under a budget that closing the four dead
    branches meets, learning closes all four (whole: 4 channels each). A live branch may close
    too where the task does not need it: which live branches matter is not planted, that the dead
    ones go is. (Accuracy is not asserted: without fine-tuning after freeze, gates that eval held
    at fractional values become 1, and one run under two xdist workers fell to chance there.)"""
    x, labels = _planted_task()
    model = _trained_start(PlantedBranches(), x, labels, steps=200)
    full = count_macs(model.eval(), x[:1])
    net = _learn_under_budget(model, x, labels, budget=0.55, round_to=4)
    branches = next(g for g in gates_of(net).values() if "branches" in g.space.grouped)
    assert branches.space.unit == 4 and branches.frozen_mask.sum() == 4
    closed_in_eval = torch.sigmoid(branches.log_alpha.detach()) * (ZETA - GAMMA) + GAMMA <= 0
    assert closed_in_eval[4:].all()  # learning closed every dead branch
    deploy = maskfx.collapse(net, "prune")
    assert deploy.branches.groups == 4 and count_macs(deploy, x[:1]) / full <= 0.55


class PlantedBlocks(nn.Module):
    """A stem and four residual blocks (torchvision's ``BasicBlock``); blocks 1 and 3 are zeroed
    at their last BatchNorm, and stay zero (not trained), so their residual branch adds nothing:
    each is its input, ReLU'd."""

    DEAD = (1, 3)

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(*(BasicBlock(16, 16) for _ in range(4)))
        self.head = nn.Linear(16, 2)
        self.kill()

    @torch.no_grad()
    def kill(self) -> None:
        for index in self.DEAD:
            for parameter in (self.blocks[index].bn2.weight, self.blocks[index].bn2.bias):
                parameter.zero_().requires_grad_(False)

    def forward(self, x):
        return self.head(self.blocks(torch.relu(self.bn(self.stem(x)))).mean((2, 3)))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_budget_removes_the_blocks_that_add_nothing(estimator):
    """Depth through the same gates as width: a block's inside is a space that may close
    entirely. Under a budget that removing the two dead blocks nearly meets, learning closes
    their insides entirely and only narrows the live blocks (the planted task does not need
    every live channel: which of those go is not planted, that no live block goes is), and the
    pruned graph has lost exactly the dead blocks' convolutions, exactly."""
    x, labels = _planted_task()
    model = _trained_start(PlantedBlocks(), x, labels, steps=100)
    full = count_macs(model.eval(), x[:1])
    net = _learn_under_budget(model, x, labels, budget=0.45, round_to=4, estimator=estimator)
    insides = {g.space.name: int(g.frozen_mask.sum()) for g in gates_of(net).values() if g.space.closable}
    assert set(insides) == {f"channels of blocks.{i}.conv1" for i in range(4)}
    assert [insides[f"channels of blocks.{i}.conv1"] == 0 for i in range(4)] == [i in PlantedBlocks.DEAD
                                                                               for i in range(4)]
    deploy = maskfx.collapse(net.eval(), "prune", example_inputs=(x[:8],))
    assert maskfx.summary(deploy).collapse.exact and count_macs(deploy, x[:1]) / full <= 0.45
    layers = {n.target for n in deploy.graph.nodes if n.op == "call_module"}
    assert all((f"blocks.{i}.conv1" in layers) == (i not in PlantedBlocks.DEAD) for i in range(4))


@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow),
                                  pytest.param("resnext50_32x4d", marks=pytest.mark.slow)])
def test_freeze_lands_under_the_budget_without_training(name):
    model = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    for target in (0.75, 0.5):
        net = maskfx.transform(model, channels=True, example_inputs=(x,), budget=maskfx.Budget(macs=target))
        maskfx.freeze(net)
        ratio = count_macs(maskfx.collapse(net, "prune"), x) / count_macs(model, x)
        assert 0.97 * target <= ratio <= target


@pytest.mark.parametrize("budget", [maskfx.Budget(params=0.5), maskfx.Budget(macs=0.6, params=0.4)])
def test_a_parameters_budget_lands_within_three_percent_under_it(budget):
    """The parameters are a second resource of the same cost model: a budget on them, alone or
    beside a MACs budget, lands as exactly, and the report states both."""
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    net = maskfx.transform(model, channels=True, example_inputs=(x,), budget=budget)
    maskfx.freeze(net)
    deploy = maskfx.collapse(net, "prune", example_inputs=(x,))
    report = maskfx.summary(deploy).collapse
    params = sum(p.numel() for p in deploy.parameters()) / sum(p.numel() for p in model.parameters())
    assert report.achieved_params == pytest.approx(params) and 0.97 * budget.params <= params <= budget.params
    if budget.macs is not None:
        assert report.achieved <= budget.macs
    assert report.exact and "parameters; achieved" in str(report)


def test_pruning_before_freeze_says_the_budget_is_not_met():
    """Freeze is what meets a budget: a pruned collapse of a net never frozen keeps every channel
    its gates still open and says which targets it misses; after freeze it is silent."""
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    net = maskfx.transform(model, channels=True, example_inputs=(x,), budget=maskfx.Budget(macs=0.6, params=0.4))
    with pytest.warns(UserWarning, match=r"keeps 1.000 of the original's MACs \(budget 0.6\) and 1.000 of the "
                                         r"original's parameters \(budget 0.4\): maskfx.freeze"):
        maskfx.collapse(net, "prune", example_inputs=(x,))
    maskfx.freeze(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert not maskfx.summary(maskfx.collapse(net, "prune", example_inputs=(x,))).collapse.over_budget()


def test_without_a_budget_freeze_keeps_what_eval_keeps_rounded_up():
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    net = maskfx.transform(model, channels=True, example_inputs=(x,))
    gate = next(iter(gates_of(net).values()))
    with torch.no_grad():
        gate.log_alpha[:5] = -10  # five closed in eval
    maskfx.freeze(net)
    assert int(gate.frozen_mask.sum()) == 64 and all(int(g.frozen_mask.sum()) == g.space.channels
                                                     for g in gates_of(net).values())  # 59 rounds up to 64
    with torch.no_grad():
        for g in gates_of(net).values():
            g.frozen_mask[:16] = 0
    assert count_macs(maskfx.collapse(net, "prune"), x) < count_macs(model, x)


def test_budget_penalty_adapts_and_is_zero_without_a_budget():
    model = torchvision.models.resnet18(weights=None, num_classes=10).train()
    x = torch.randn(2, 3, 32, 32)
    plain = maskfx.transform(model, channels=True, example_inputs=(x,))
    assert float(budget_penalty(plain)) == 0.0
    net = maskfx.transform(model, channels=True, example_inputs=(x,), budget=maskfx.Budget(macs=0.5, warmup=0))
    state = net.maskfx_budget
    first = budget_penalty(net)
    assert float(state.multiplier) == pytest.approx(GROWTH) and float(first.detach()) > 0  # over budget: grows
    first.backward()
    assert all(g.log_alpha.grad is not None and (g.log_alpha.grad > 0).all() for g in gates_of(net).values())
    started = maskfx.transform(model, channels=True, example_inputs=(x,),
                               budget=maskfx.Budget(macs=0.5, warmup=0, initial_multiplier=3))
    assert float(budget_penalty(started).detach()) == pytest.approx(3 * float(first.detach()))  # same excess, 3x
    assert float(started.maskfx_budget.multiplier) == pytest.approx(3 * GROWTH)


@pytest.mark.parametrize("budget, start", [
    (dict(macs=0.5), 1.0), (dict(macs=DEEP_CUT), 1.0), (dict(macs=0.2), DEEP_CUT_MULTIPLIER),
    (dict(macs=0.5, params=0.1), DEEP_CUT_MULTIPLIER), (dict(params=0.2), DEEP_CUT_MULTIPLIER),
    (dict(macs=0.1, initial_multiplier=1), 1.0), (dict(macs=0.5, initial_multiplier=3), 3.0),
])
def test_the_multiplier_starts_higher_under_a_deep_cut_unless_given(budget, start):
    """Started at 1 a deep cut's gates stop far above it at freeze; the default starts them at 3
    under DEEP_CUT of the original (any target), and a given start is kept."""
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    net = maskfx.transform(model, channels=True, example_inputs=(torch.randn(1, 3, 32, 32),),
                           budget=maskfx.Budget(**budget))
    assert maskfx.Budget(**budget).start_multiplier() == start == float(net.maskfx_budget.multiplier)


@pytest.mark.parametrize("budget, message", [
    (dict(macs=0), "fraction in \\(0, 1\\]"), (dict(macs=1.5), "fraction in \\(0, 1\\]"),
    (dict(macs=-0.2), "fraction in \\(0, 1\\]"), (dict(macs=0.5, warmup=2), "warmup"),
    (dict(), "needs macs= or params="), (dict(params=0), "params must be a fraction in \\(0, 1\\]"),
    (dict(macs=0.5, params=True), "params must be"),
    (dict(macs=0.5, initial_multiplier=0), "initial_multiplier must be None or a number in \\[0.001, 1e\\+07\\]"),
    (dict(macs=0.5, initial_multiplier=float("nan")), "initial_multiplier"),
    (dict(macs=0.5, initial_multiplier=True), "initial_multiplier"),
])
def test_bad_budgets_are_one_clear_error(budget, message):
    with pytest.raises(maskfx.UserError, match=message):
        maskfx.Budget(**budget)


def test_unreachable_budget_names_the_smallest_reachable_value_and_changes_nothing():
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(maskfx.UserError, match=r"unreachable: removing everything removable leaves 0\.\d+"):
        maskfx.transform(model, channels=True, example_inputs=(x,), budget=maskfx.Budget(macs=0.001))
    with pytest.raises(maskfx.UserError, match=r"params=1e-06 is unreachable: removing everything removable "
                                               r"leaves 0\.\d+ of the original parameters; ask for"):
        maskfx.transform(model, channels=True, example_inputs=(x,), budget=maskfx.Budget(params=1e-6))
    with pytest.raises(maskfx.UserError, match="needs a technique that can remove MACs"):
        maskfx.transform(model, jumpout=True, example_inputs=(x,), budget=maskfx.Budget(macs=0.5))
    with pytest.raises(maskfx.UserError, match="example_inputs"):
        maskfx.transform(model, channels=True, budget=maskfx.Budget(macs=0.5))
    with pytest.raises(maskfx.UserError, match="maskfx.Budget"):
        maskfx.transform(model, channels=True, example_inputs=(x,), budget=0.5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_one_training_draw_closes_a_channel_in_every_layer_writing_it():
    """p, q and r write one space: in a training forward they are gated by the same draw."""
    torch.manual_seed(0)
    net = maskfx.transform(ConcatAndSharedAdds().train(), channels=True, example_inputs=(torch.randn(2, 3, 8, 8),))
    gate = next(g for g in gates_of(net).values() if g.space.name == "channels of p")
    with torch.no_grad():
        gate.log_alpha.fill_(0.0)  # about half the draws closed
    seen = []
    gate.register_forward_hook(lambda module, args, out: seen.append((out == 0).flatten(2).all(-1)[0]))
    for _ in range(3):
        seen.clear()
        net(torch.randn(2, 3, 8, 8))
        assert len(seen) == 4 and 0 < int(seen[0].sum()) < 32  # p, q, r, the depthwise conv
        assert all(torch.equal(s, seen[0]) for s in seen[1:])
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    maskfx.collapse(net, "prune")  # the draw is not kept on the module: a trained net deep-copies


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_each_gate_starts_open_with_init_keep_and_draws_at_its_keep_probability(estimator):
    """Both estimators: P(open) is ``init_keep`` at the start and eval keeps every unit; the
    training draws are open at the rate ``keep_probability`` states (20,000 draws per unit, a
    tolerance of 4 standard errors)."""
    gate = ChannelGate(ChannelSpace("s", channels=3, unit=1), init_keep=0.99, estimator=estimator)
    assert torch.allclose(gate.keep_probability(), torch.full((3,), 0.99)) and bool((gate.deterministic() == 1).all())
    torch.manual_seed(0)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-2.0, 0.3, 2.0]))
        want = gate.keep_probability()
        rate = torch.stack([gate.sample() > 0 for _ in range(20_000)]).float().mean(0)
    assert torch.allclose(rate, want, atol=float(4 * (0.25 / 20_000) ** 0.5))


def test_the_straight_through_gate_is_binary_forward_and_passes_the_gradient_to_its_probability():
    """``estimator="straight-through"``: a draw is exactly 0 or 1, its gradient to ``log_alpha``
    is dP/dlog_alpha = p (1 - p) whatever was drawn, and eval keeps the units with p > 0.5."""
    gate = ChannelGate(ChannelSpace("s", channels=3, unit=1), estimator="straight-through")
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.5, 3.0]))
    torch.manual_seed(0)
    draw = gate.sample()
    assert set(draw.detach().tolist()) <= {0.0, 1.0}
    draw.sum().backward()
    p = torch.sigmoid(gate.log_alpha.detach())
    assert torch.allclose(gate.log_alpha.grad, p * (1 - p))
    assert gate.deterministic().tolist() == [0.0, 1.0, 1.0]


def test_a_bad_estimator_is_one_clear_error():
    with pytest.raises(maskfx.UserError, match="estimator must be one of"):
        maskfx.ChannelConfig(estimator="gumbel")


@functools.cache  # two tests read the 12-epoch run
def _fit_planted_under_budget(structure_epochs: int) -> tuple[list[dict], list[str]]:
    """The planted model under a 0.55 budget through ``fit``: ``structure_epochs`` epochs of 8 steps
    learning the gates, then freeze and one epoch of weights; the history and the shortfall warnings."""
    from maskfx.train import Data, fit, learn_then_frozen
    x, labels = _planted_task()
    torch.manual_seed(0)
    model = _trained_start(Planted(), x, labels, steps=60)
    net = maskfx.transform(model, channels=maskfx.ChannelConfig(round_to=4), example_inputs=(x[:2],),
                           budget=maskfx.Budget(macs=0.55))
    data = Data(torch.utils.data.TensorDataset(x, labels), torch.utils.data.TensorDataset(x, labels), 2, (1, 8, 8))
    phases = learn_then_frozen(structure_epochs + 1, 0.01, 0.5, 0, 0.0, structure_epochs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(net, data, phases, device=torch.device("cpu"), batch_size=32, evaluate=False)
    return history, [str(w.message) for w in caught if "short of the budget" in str(w.message)]


def test_fit_records_how_far_the_structure_learned_and_warns_when_freeze_made_the_cut():
    """One epoch (8 steps) cannot move gates that start at 0.99 open to a 0.55 budget: the history
    says how far the expected MACs got, and freeze warns that it cut the rest. Twelve epochs (96
    steps, the planted tests' length) reach the budget and say nothing."""
    short, warned = _fit_planted_under_budget(structure_epochs=1)
    reached = [record["budget_expected"]["macs"] for record in short if "budget_expected" in record]
    assert len(reached) == 1 and reached[0] > 0.55 + maskfx.budget.SHORTFALL * 0.45
    assert len(warned) == 1 and f"{reached[0]:.3f}" in warned[0] and "0.55" in warned[0]
    assert "budget_expected" not in short[-1]  # after freeze the structure no longer learns
    long, warned = _fit_planted_under_budget(structure_epochs=12)
    reached = [record["budget_expected"]["macs"] for record in long if "budget_expected" in record]
    assert len(reached) == 12 and reached[-1] <= 0.55 + maskfx.budget.SHORTFALL * 0.45 and not warned


def test_the_learning_holds_the_budget_once_it_reaches_it():
    """The gates' momentum (``GATE_BETAS``) lets them stop when the penalty falls silent: on the
    planted task the expected MACs follow the annealed target down to 0.55 and stay within 0.02 of
    it. With Adam's usual 0.9 they went on closing to 0.475 and ended at 0.49 (measured)."""
    history, _ = _fit_planted_under_budget(structure_epochs=12)
    reached = [record["budget_expected"]["macs"] for record in history if "budget_expected" in record]
    assert min(reached) >= 0.55 - 0.02 and abs(reached[-1] - 0.55) <= 0.02, reached
