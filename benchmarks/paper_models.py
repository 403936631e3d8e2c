"""The papers' network families at the scale of the digits benchmark (8x8 images, 10 classes).

Each mirrors the model of one paper's comparison, shrunk: the small four-conv CNN with Dropout
after its ReLUs (Jumpout's "CIFAR10(s)"), that CNN's trunk with or without two hidden FC layers
(Blockout's Fig. 5), a CIFAR-style ResNet of basic blocks (MaskConnect Table 1) and a CIFAR-style
ResNeXt with C = 8 branches of bottleneck width 4 (GateConnect Table 1, the {D, 4, 8} family).
torchvision's blocks are reused so maskfx's passes see the graphs they see in the wild.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

NUM_CLASSES = 10


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def conv_trunk(dropout: float = 0.0, width: int = 32) -> nn.Sequential:
    """Four 3x3 convs in two stages (width, 2 x width channels), each stage ending in a ReLU
    followed by Dropout (when ``dropout > 0``) and a 2x2 max-pool, then global average pooling."""
    layers: list[nn.Module] = []
    for cin, cout in ((3, width), (width, 2 * width)):
        layers += _conv_bn_relu(cin, cout) + _conv_bn_relu(cout, cout)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def head(features: int, hidden: tuple[int, ...] = (), dropout: float = 0.0) -> nn.Sequential:
    """Linear classifier after ReLU hidden layers of the given sizes (Dropout after each ReLU)."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(features, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        features = size
    return nn.Sequential(*layers, nn.Linear(features, NUM_CLASSES))


def small_cnn(dropout: float = 0.0, hidden: tuple[int, ...] = (), head_dropout: float | None = None,
              width: int = 32) -> nn.Sequential:
    """The trunk and a head; ``head_dropout`` defaults to the trunk's rate."""
    head_rate = dropout if head_dropout is None else head_dropout
    return nn.Sequential(conv_trunk(dropout, width), head(2 * width, hidden, head_rate))


class _Stages(nn.Module):
    """A 3x3 stem and residual stages, global pooling, a Linear classifier (the CIFAR layout)."""

    def __init__(self, stem: int, stages: list[nn.Module], features: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(3, stem))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(features, NUM_CLASSES)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def _projection(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def cifar_resnet(blocks_per_stage: int = 2, widths: tuple[int, ...] = (16, 32, 64)) -> nn.Module:
    """ResNet-(2 + 6n) of the CIFAR papers: stages of basic blocks, the first of each later stage
    strided with a 1x1 projection shortcut."""
    stages, cin = [], widths[0]
    for index, width in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if index > 0 and block == 0 else 1
            stages.append(BasicBlock(cin, width, stride, _projection(cin, width, stride)))
            cin = width
    return _Stages(widths[0], stages, cin)


def cifar_resnext(modules_per_stage: int = 2, cardinality: int = 8, bottleneck_width: int = 4,
                  outputs: tuple[int, ...] = (64, 128, 256)) -> nn.Module:
    """ResNeXt of the CIFAR papers ({D, w, C}): stages of bottleneck modules with C branches of
    width w, w doubling per stage; the first module of each stage has a projection shortcut."""
    stages, cin = [], outputs[0]
    for index, out in enumerate(outputs):
        # torchvision's Bottleneck has C * int(planes * base_width / 64) inner channels and
        # 4 * planes outputs, so this planes/base_width pair gives C branches of width w * 2**index.
        planes, base_width = out // Bottleneck.expansion, 64 * bottleneck_width * 2**index * Bottleneck.expansion // out
        for module in range(modules_per_stage):
            stride = 2 if index > 0 and module == 0 else 1
            projection = _projection(cin, out, stride) if module == 0 else None
            stages.append(Bottleneck(cin, planes, stride, projection, groups=cardinality, base_width=base_width))
            cin = out
    return _Stages(outputs[0], stages, cin)
