"""transform(): sites, filters, Dropout replacement, validation, tracing errors, no mutation."""
import copy

import pytest
import torch
from torch import nn

import maskfx
from maskfx.nn import Jumpout
from models import RELU_SITES_OF_EVERY_RELU_KIND, EveryReluKind, UntraceableInside, UntraceableRoot


def jumpouts(net):
    return [m for m in net.modules() if isinstance(m, Jumpout)]


def test_every_relu_call_site_gets_its_own_jumpout():
    net = maskfx.transform(EveryReluKind(), jumpout=True)
    assert len(jumpouts(net)) == RELU_SITES_OF_EVERY_RELU_KIND
    assert len({id(m) for m in jumpouts(net)}) == RELU_SITES_OF_EVERY_RELU_KIND
    summary = maskfx.summary(net)
    assert [s.location for s in summary.sites].count("act") == 2  # one module, two call sites
    assert summary.count("jumpout") == RELU_SITES_OF_EVERY_RELU_KIND


def test_dropout_after_relu_is_replaced_not_stacked():
    net = maskfx.transform(EveryReluKind(), jumpout=True)
    assert not any(isinstance(m, nn.Dropout) for m in net.modules())
    replaced = [s for s in maskfx.summary(net).sites if s.detail]
    assert len(replaced) == 1 and "Dropout 'drop' (p=0.3)" in replaced[0].detail
    kept = maskfx.transform(EveryReluKind(), jumpout=maskfx.JumpoutConfig(replace_dropout=False))
    assert sum(isinstance(m, nn.Dropout) for m in kept.modules()) == 1
    assert len(jumpouts(kept)) == RELU_SITES_OF_EVERY_RELU_KIND


def test_eval_output_is_the_original_and_train_output_is_not():
    model = EveryReluKind().eval()
    net = maskfx.transform(model, jumpout=maskfx.JumpoutConfig(sigma=0.3)).eval()
    x = torch.randn(32, 16)
    torch.testing.assert_close(net(x), model(x), rtol=0, atol=0)
    net.train()
    assert not torch.allclose(net(x), model(x))


def test_include_and_exclude_filter_sites_by_qualified_name():
    only_act = maskfx.transform(EveryReluKind(), jumpout=maskfx.JumpoutConfig(include=("act",)))
    assert [s.location for s in maskfx.summary(only_act).sites] == ["act", "act"]
    no_act = maskfx.transform(EveryReluKind(), jumpout=maskfx.JumpoutConfig(exclude="act"))
    assert len(jumpouts(no_act)) == RELU_SITES_OF_EVERY_RELU_KIND - 2
    assert "act" not in [s.location for s in maskfx.summary(no_act).sites]


def test_functional_sites_are_named_by_their_enclosing_module():
    import torchvision
    net = maskfx.transform(torchvision.models.densenet121(), jumpout=maskfx.JumpoutConfig(include=("features.denseblock1.*",)))
    locations = [s.location for s in maskfx.summary(net).sites]
    assert locations and all(loc.startswith("features.denseblock1.") for loc in locations)


def test_the_given_model_is_never_modified():
    model = EveryReluKind().train()
    before = copy.deepcopy(model.state_dict())
    net = maskfx.transform(model, jumpout=True)
    assert model.training and isinstance(model.drop, nn.Dropout)
    assert not any(isinstance(m, Jumpout) for m in model.modules())
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(torch.randn(8, 16)).sum().backward()
    opt.step()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("kwargs, field", [
    (dict(jumpout="yes"), "jumpout"),
    (dict(jumpout=0.5), "jumpout"),
    (dict(leaf_modules=["no.such.module"]), "leaf_modules"),
    (dict(leaf_modules=[3]), "leaf_modules"),
])
def test_invalid_arguments_raise_value_error_naming_the_field(kwargs, field):
    model = EveryReluKind()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=field):
        maskfx.transform(model, **kwargs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, field", [
    (dict(sigma=-1.0), "sigma"), (dict(p_max=2.0), "p_max"), (dict(include=[1]), "include"),
])
def test_invalid_config_raises_on_construction(kwargs, field):
    with pytest.raises(ValueError, match=field):
        maskfx.JumpoutConfig(**kwargs)


def test_untraceable_submodule_raises_trace_error_with_the_leaf_remedy():
    model = UntraceableInside()
    with pytest.raises(maskfx.TraceError) as caught:
        maskfx.transform(model, jumpout=True)
    message = str(caught.value)
    assert caught.value.module == "body.2"
    assert "'body.2' (DataDependent)" in message and "leaf_modules=['body.2']" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    net = maskfx.transform(model, jumpout=True, leaf_modules=["body.2"])
    x = torch.randn(5, 4)
    torch.testing.assert_close(net.eval()(x), model.eval()(x))
    assert len(jumpouts(net)) == 1
    by_type = maskfx.transform(model, jumpout=True, leaf_modules=[type(model.body[2])])
    assert len(jumpouts(by_type)) == 1


def test_untraceable_root_forward_says_leaf_modules_cannot_help():
    with pytest.raises(maskfx.TraceError, match="leaf_modules cannot help") as caught:
        maskfx.transform(UntraceableRoot(), jumpout=True)
    assert caught.value.module is None


def test_a_maskfx_graph_module_cannot_be_transformed_twice():
    net = maskfx.transform(EveryReluKind(), jumpout=True)
    with pytest.raises(ValueError, match="already"):
        maskfx.transform(net, jumpout=True)


def test_summary_and_freeze_reject_plain_modules():
    with pytest.raises(ValueError, match="maskfx.transform"):
        maskfx.summary(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="maskfx.transform"):
        maskfx.freeze(torch.fx.symbolic_trace(nn.Linear(2, 2)))
