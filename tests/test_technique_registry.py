"""A technique is one folder plus one registry line: a toy technique, defined here as one
folder-like namespace, goes through transform, structure, param_groups, freeze, collapse, export
and the CLI with nothing else edited but the registry tuple."""
import argparse
import ast
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.fx as fx
from torch import nn

import maskfx
from maskfx import techniques
from maskfx.cli.options import FlagError, add_techniques, technique_configs
from maskfx.graph.surgery import bypass, fresh_name, freeze_modules, insert_module_after, module_of, nodes_calling
from maskfx.state import Rewrite, Site
from maskfx.technique import Flags, LearnedSite, Option, ParamGroup, Technique

MASKFX = Path(maskfx.__file__).parent


# --- the toy technique's folder: config, layer, rewrite, freeze, collapse, view, flags --------------

@dataclass(frozen=True)
class ScaleConfig:
    start: float = 1.0


@dataclass(frozen=True)
class ScaleLowered:
    folded: int

    def notes(self) -> list[str]:
        return [f"scale: {self.folded} scales folded into their Linear"]


class OutputScale(nn.Module):
    """A learned scale per output of the Linear before it; ``freeze`` rounds it to 0.1."""

    def __init__(self, features: int, start: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((features,), start))

    def structure_parameters(self) -> list[nn.Parameter]:
        return [self.scale] if self.scale.requires_grad else []

    @torch.no_grad()
    def freeze(self) -> None:
        self.scale.copy_(torch.round(self.scale * 10) / 10).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class scale:  # noqa: N801 (stands for a package module, maskfx/techniques/scale/__init__.py)
    TECHNIQUE = "scale"
    CONFIG = ScaleConfig
    LAYERS = (OutputScale,)
    LEARNED = (OutputScale,)
    DRAWS = ()
    PARAM_GROUP = ParamGroup("scales", (OutputScale,), mask_momentum=False)
    FLAGS = Flags("a learned scale after every Linear", (Option("start", "the scales' start", float),))

    @staticmethod
    def rewrite(gm: fx.GraphModule, config: ScaleConfig, example_inputs: tuple | None) -> Rewrite:
        sites = []
        for node, linear in nodes_calling(gm, nn.Linear):
            name = fresh_name(gm, f"scale_{node.target}")
            insert_module_after(gm, node, name, OutputScale(linear.out_features, config.start))
            sites.append(Site("scale", name, str(node.target)))
        return Rewrite(sites)

    @staticmethod
    def freeze(gm: fx.GraphModule) -> None:
        freeze_modules(gm, OutputScale)

    @staticmethod
    @torch.no_grad()
    def collapse(gm: fx.GraphModule, mode: str, config: ScaleConfig) -> ScaleLowered:
        folded = 0
        for node, layer in list(nodes_calling(gm, OutputScale)):
            linear = module_of(gm, node.args[0])
            linear.weight.mul_(layer.scale[:, None])
            linear.bias.mul_(layer.scale)
            bypass(gm, node)
            folded += 1
        return ScaleLowered(folded)

    @staticmethod
    def structure(gm: fx.GraphModule) -> list[LearnedSite]:
        return [LearnedSite("scale", str(node.args[0].target), layer.scale.detach().clone(), layer.scale.detach() != 0,
                            not layer.scale.requires_grad) for node, layer in nodes_calling(gm, OutputScale)]


# --- its registry line --------------------------------------------------------------------------

@contextmanager
def registered(technique):
    with mock.patch.object(techniques, "PIPELINE", (*techniques.PIPELINE, technique)):
        yield


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def test_the_toy_fits_the_protocol():
    assert isinstance(scale, Technique)


@pytest.mark.parametrize("mode", ["expected", "prune"])
def test_a_registered_toy_runs_the_whole_lifecycle(mode, tmp_path):
    x = torch.randn(4, 6)
    with registered(scale):
        net = maskfx.transform(mlp(), scale=ScaleConfig(0.5), jumpout=True)
        assert maskfx.summary(net).count("scale") == 2
        groups = {g["name"]: g for g in maskfx.param_groups(net, lr=0.1)}
        assert len(groups["scales"]["params"]) == 2 and "momentum" not in groups["scales"]
        with torch.no_grad():
            for layer in (m for m in net.modules() if isinstance(m, OutputScale)):
                layer.scale.uniform_(0.2, 2.0)
        maskfx.freeze(net)
        sites = [s for s in maskfx.structure(net) if s.technique == "scale"]
        assert [s.location for s in sites] == ["0", "2"] and all(s.frozen for s in sites)
        assert all(torch.equal(s.values, torch.round(s.values * 10) / 10) for s in sites)
        deploy = maskfx.collapse(net, mode)
        assert not any(isinstance(m, OutputScale) for m in deploy.modules())
        assert maskfx.summary(deploy).collapse.technique("scale").facts == ScaleLowered(folded=2)
        torch.testing.assert_close(deploy(x), net.eval()(x), rtol=0, atol=1e-5)
        _, report = maskfx.export_onnx(deploy, tmp_path / "toy.onnx", example_inputs=(x,))
        assert report.ok


def test_a_registered_toy_gets_its_command_line_flags():
    with registered(scale):
        parser = argparse.ArgumentParser()
        add_techniques(parser)
        assert technique_configs(parser.parse_args(["--scale", "--start", "0.25"])) == {"scale": ScaleConfig(0.25)}
        with pytest.raises(FlagError, match="--start configures --scale"):
            technique_configs(parser.parse_args(["--jumpout", "--start", "0.25"]))


def test_only_the_registry_and_the_public_faces_import_a_technique():
    """Outside its folder, nothing names a technique: adding one edits no other file."""
    faces = {MASKFX / "__init__.py", MASKFX / "nn" / "__init__.py", MASKFX / "techniques" / "__init__.py"}
    folders = [p for p in (MASKFX / "techniques").iterdir() if (p / "__init__.py").exists()]
    for path in set(MASKFX.rglob("*.py")) - faces:
        inside = next((f for f in folders if f in path.parents), None)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for folder in folders:
                    named = f"maskfx.techniques.{folder.name}"
                    if folder != inside and any(n == named or n.startswith(named + ".") for n in names):
                        raise AssertionError(f"{path.relative_to(MASKFX)} imports {named}")
