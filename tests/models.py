"""Small hand-written models shared by the tests."""
import torch
import torch.nn.functional as F
from torch import nn


class EveryReluKind(nn.Module):
    """One ReLU call site of each kind maskfx must find, a shared module called twice, and a
    Dropout right after a ReLU."""

    def __init__(self):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(16, 16) for _ in range(8))
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        f = self.fcs
        x = self.drop(self.act(f[0](x)))           # nn.ReLU, then Dropout (replaced)
        x = F.relu(f[1](x))                        # F.relu
        x = torch.relu(f[2](x))                    # torch.relu
        x = f[3](x).relu()                         # Tensor.relu
        x = F.relu(f[4](x), inplace=True)          # F.relu in place
        x = torch.relu_(f[5](x))                   # torch.relu_
        x = f[6](x).relu_()                        # Tensor.relu_
        x = self.act(f[7](x))                      # the same nn.ReLU again: a second site
        return self.head(x)


RELU_SITES_OF_EVERY_RELU_KIND = 8


class DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class UntraceableInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), DataDependent())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.body(x))


class UntraceableRoot(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x


class RandomInEval(nn.Module):
    """Adds noise even in eval mode: its export must be refused."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) + torch.rand_like(x)


class MLPHead(nn.Module):
    """A small backbone and a three-Linear head with ReLU and Dropout, like VGG's classifier."""

    def __init__(self, features=24, hidden=32, classes=5):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, features, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(self.backbone(x))


class HandResidual(nn.Module):
    """Residual blocks written by hand: F.relu(x + f(x)), torch.add, a '+' without activation,
    plus adds that are not residual and must be left alone."""

    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.f1 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.f2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.f3 = nn.Conv2d(width, width, 3, padding=1)
        self.f4 = nn.Conv2d(width, width, 3, padding=1)
        self.offset = nn.Parameter(torch.zeros(1, width, 1, 1))
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.f1(x))                  # block 1
        x = torch.relu(torch.add(self.f2(x), x))    # block 2
        x = x + self.f3(x)                          # block 3 (no activation)
        x = F.relu(self.f4(x)) + x                  # block 4
        x = x + self.offset                         # broadcasting: not residual
        x = x + x.mean(dim=(2, 3), keepdim=True)    # broadcasting: not residual
        return self.head(x.mean(dim=(2, 3)))


class TwoInputs(nn.Module):
    """An add of two independent inputs: no common ancestor, not residual."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


class DropPath(nn.Module):
    """Stochastic depth written as the model libraries write it: returns early when not training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = x.new_empty(shape).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class ResBlock(nn.Module):
    """A basic residual block with optional Dropout inside and drop-path before the add."""

    def __init__(self, width: int, dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x):
        y = self.drop(self.act(self.bn1(self.conv1(x))))
        y = self.drop_path(self.bn2(self.conv2(y)))
        return self.act(x + y)


class ModeDependentResNet(nn.Module):
    """A residual chain whose training forward differs from its eval forward, in one ``style``:

    - ``"functional-dropout"``: ``F.dropout(..., training=self.training)`` in the top-level forward;
    - ``"drop-path"``: a drop-path module that returns early when not training;
    - ``"aux"``: an auxiliary output only in training;
    - ``"dropout-in-blocks"``: ``nn.Dropout`` modules inside the blocks (one graph serves both modes).
    """

    STYLES = ("functional-dropout", "drop-path", "aux", "dropout-in-blocks")

    def __init__(self, style: str, width: int = 8, blocks: int = 3, classes: int = 5):
        super().__init__()
        self.style = style
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*(ResBlock(width, dropout=0.3 * (style == "dropout-in-blocks"),
                                               drop_path=0.3 * (style == "drop-path")) for _ in range(blocks)))
        self.head = nn.Linear(width, classes)
        self.aux = nn.Linear(width, classes) if style == "aux" else None

    def forward(self, x):
        features = self.blocks(F.relu(self.stem(x))).mean(dim=(2, 3))
        if self.style == "functional-dropout":
            features = F.dropout(features, 0.3, training=self.training)
        out = self.head(features)
        if self.aux is not None and self.training:
            return out, self.aux(features)
        return out


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class StyledBottleneck(nn.Module):
    """A ResNeXt bottleneck written the way another model library might write it (``style``):

    - ``"modules"``: activation modules, ``nn.Identity`` placeholders, ``x += shortcut`` (timm's form);
    - ``"functional"``: ``F.relu`` and ``x + shortcut``;
    - ``"shortcut-left"``: ``torch.add(shortcut, x)`` and ``Tensor.relu``;
    - ``"se"``: squeeze-and-excitation before the add;
    - ``"drop-path"``: drop-path before the add.
    """

    def __init__(self, cin: int, width: int, cout: int, groups: int, stride: int, style: str):
        super().__init__()
        self.style = style
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.act1, self.act2, self.act3 = nn.ReLU(inplace=True), nn.ReLU(inplace=True), nn.ReLU(inplace=True)
        self.drop_block, self.aa = nn.Identity(), nn.Identity()
        self.se = SqueezeExcite(cout) if style == "se" else None
        self.drop_path = DropPath(0.2) if style == "drop-path" else None
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        shortcut = x
        if self.style == "functional":
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
        else:
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        if self.style == "functional":
            return F.relu(x + shortcut)
        if self.style == "shortcut-left":
            return torch.add(shortcut, x).relu()
        x += shortcut
        return self.act3(x)


class StyledResNeXt(nn.Module):
    """Two stages of two ResNeXt modules (C = ``groups`` branches each) in one ``StyledBottleneck`` style."""

    STYLES = ("modules", "functional", "shortcut-left", "se", "drop-path")

    def __init__(self, style: str, groups: int = 4, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stages = nn.Sequential(
            StyledBottleneck(16, 4 * groups, 32, groups, 1, style), StyledBottleneck(32, 4 * groups, 32, groups, 1, style),
            StyledBottleneck(32, 8 * groups, 64, groups, 2, style), StyledBottleneck(64, 8 * groups, 64, groups, 1, style))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))


def calibrated(model: nn.Module, shape: tuple[int, ...], batches: int = 3) -> nn.Module:
    """``model`` in eval mode with BatchNorm statistics from random batches, as a trained model has them."""
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(*shape))
    return model.eval()
