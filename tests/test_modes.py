"""The transformed model keeps the original's train-mode behaviour (dropout, drop-path,
training-only outputs) and its eval-mode behaviour, for every way a model can branch on
``self.training``. MaskConnect at K = 1 from the original chain, frozen, is deterministic and
function-preserving in training, so the transformed net must compute exactly the original."""
import contextlib
import warnings

import pytest
import torch
import torchvision
from torch.utils._pytree import tree_flatten

import maskfx
from maskfx.dual import DualGraphModule
from models import ModeDependentResNet


def identity_maskconnect(model: torch.nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    net = maskfx.transform(model, maskconnect=maskfx.MaskConnectConfig(fan_in=1, init="previous"),
                           example_inputs=(x,))
    return maskfx.freeze(net)


def assert_same_in_both_modes(model: torch.nn.Module, net: torch.nn.Module, x: torch.Tensor,
                              atol: float = 1e-5) -> None:
    """Same seed, same training output (structure included); then the same eval output."""
    for training in (True, False):
        outputs = []
        for module in (model, net):
            torch.manual_seed(7)
            with torch.no_grad():
                outputs.append(module.train(training)(x))
        (expected, spec), (actual, actual_spec) = (tree_flatten(o) for o in outputs)
        assert str(actual_spec) == str(spec), f"training={training}: output structure differs"
        for e, a in zip(expected, actual):
            torch.testing.assert_close(a, e, rtol=0, atol=atol)


@pytest.mark.parametrize("style", ModeDependentResNet.STYLES)
def test_hand_written_training_paths_survive_transform(style):
    model = ModeDependentResNet(style)
    x = torch.randn(4, 3, 8, 8)
    net = identity_maskconnect(model, x)
    assert maskfx.summary(net).count("maskconnect") == 2
    # Two graphs only where the model's own forward branches on the mode; a parameter-free
    # drop-path module is kept whole (like nn.Dropout) and one graph suffices.
    assert isinstance(net, DualGraphModule) == (style in ("functional-dropout", "aux"))
    kept_whole = [n for n in maskfx.summary(net).notes if n.startswith("kept whole")]
    assert (kept_whole == ["kept whole, as their forward depends on train/eval mode and they have no parameters: "
                           "blocks.0.drop_path, blocks.1.drop_path, blocks.2.drop_path"]) == (style == "drop-path")
    assert_same_in_both_modes(model, net, x)
    train_output = net.train()(x)
    assert isinstance(train_output, tuple) == (style == "aux")


@pytest.mark.parametrize("style", ["functional-dropout", "drop-path"])
def test_training_randomness_of_the_original_is_kept(style):
    model = ModeDependentResNet(style).train()
    net = identity_maskconnect(model, torch.randn(4, 3, 8, 8)).train()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))  # its dropout still drops
        net.eval()
        assert torch.equal(net(x), net(x))


def test_collapse_keeps_eval_semantics_and_a_step_in_train_mode_reaches_eval_mode():
    model = ModeDependentResNet("aux")
    x = torch.randn(4, 3, 8, 8)
    net = identity_maskconnect(model, x).train()
    out, aux = net(x)
    (out.square().mean() + aux.square().mean()).backward()
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
        net.eval()
        deploy = maskfx.collapse(net, "prune")
        torch.testing.assert_close(deploy(x), net(x), rtol=0, atol=1e-5)
    assert not isinstance(deploy, DualGraphModule) and "aux" not in dict(deploy.named_modules())
    state = net.state_dict()
    again = identity_maskconnect(model, x)
    again.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), net(x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("googlenet", 64), ("inception_v3", 299), ("efficientnet_b0", 64),
                                        ("convnext_tiny", 64)])
def test_torchvision_training_only_paths_survive_transform(name, size):
    kwargs = dict(aux_logits=True, init_weights=True) if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)
    x = torch.randn(2, 3, size, size)
    with pytest.warns(UserWarning) if name in ("googlenet", "inception_v3") else _no_warning():
        net = identity_maskconnect(model, x)  # googlenet and inception have no residual chains
    assert (maskfx.summary(net).count("maskconnect") > 0) == name.startswith(("efficientnet", "convnext"))
    assert_same_in_both_modes(model, net, x, atol=1e-4)


@contextlib.contextmanager
def _no_warning():
    """Fails if maskfx warns inside (``pytest.warns``'s opposite)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message) for w in caught]
