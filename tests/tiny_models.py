"""Small models for CLI, checkpoint and DDP tests, importable as ``module:fn`` specs
(``tiny_models:resnet``): a chain of residual blocks (MaskConnect) and a two-layer head (Blockout)."""
from torch import nn
from torchvision.models.resnet import BasicBlock


def resnet(num_classes: int = 10, width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        BasicBlock(width, width), BasicBlock(width, width), BasicBlock(width, width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, num_classes))


def not_a_model() -> int:
    return 3


def broken() -> nn.Module:
    """A factory whose own code fails, as a user's may."""
    raise RuntimeError("the factory's own bug")
