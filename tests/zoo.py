"""The torchvision classification zoo, and an independent count of a model's ReLU call sites."""
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

ALL_MODELS = torchvision.models.list_models(module=torchvision.models)

# Over ~150M parameters: transform, eval and expected-collapse checks only (no training step,
# prune or ONNX export), to keep CI's 2 cores and 24 GB inside budget.
GIANTS = frozenset({"convnext_large", "regnet_y_128gf", "vit_h_14", "vit_l_16", "vit_l_32"})


def input_size(name: str) -> int:
    """The smallest square input that exercises all of the model (measured per family, batch 2,
    eval and train mode): compute is ~quadratic in it, and nothing checked depends on it."""
    if name.startswith("inception"):
        return 299  # the train-mode aux head's 5x5 conv needs Mixed_6e's 17x17 map after its 5/3 pooling
    if name.startswith("maxvit"):
        return 224  # every stage's map must split into 7x7 partitions: 32 * 7
    if name.startswith("vit"):
        return 2 * int(name.rsplit("_", 1)[1])  # built for it (model_kwargs): 2x2 patches + class token
    if name.startswith("swin"):
        return 64  # stage-1 map 16x16 exceeds the window (7 / 8), so the shifted windows really shift
    if name == "alexnet":
        return 64  # 63 is the least its three 3/2 max-poolings leave a pixel for
    if name.startswith(("efficientnet", "mnasnet")):
        return 64  # at 32 px BatchNorm calibrated on a 1x1 last stage drives random-init outputs to ~1e4,
        # where fp32 rounding alone exceeds the 1e-5 and ONNX parity tolerances
    return 32  # stride-32 convnets: a 1x1 last stage (googlenet and squeezenet need 16 and 24)


def model_kwargs(name: str) -> dict:
    """Builder arguments beyond ``weights=None, num_classes=10``: ViT's position embedding is sized
    for its ``image_size`` (224 by default), which the builder takes when no weights are loaded."""
    return {"image_size": input_size(name)} if name.startswith("vit") else {}


def build(name: str) -> torch.nn.Module:
    return torchvision.models.get_model(name, weights=None, num_classes=10, **model_kwargs(name)).eval()


class _CountRelu(TorchDispatchMode):
    RELU = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
    HARDTANH = {torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default}  # ReLU6 is hardtanh(0, 6)

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.RELU or (func in self.HARDTANH and args[1] == 0 < args[2])
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def count_relu_calls(model: torch.nn.Module, x: torch.Tensor, training: bool = False) -> int:
    """Rectifier kernels (ReLU, ReLU6) one forward runs (eval by default): in a loop-free model,
    one per call site."""
    with _CountRelu() as counter:
        model.train(training)(x)
    return counter.count


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """BatchNorm running statistics from a real batch, as a trained network has them. Random-init
    statistics (mean 0, variance 1) let activations grow layer after layer (efficientnet outputs
    reach ~1e3), which turns fp32 rounding into large absolute differences."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: exactly the calibration batch's statistics
    model.train()(torch.randn(8, *x.shape[1:], generator=torch.Generator().manual_seed(0)))
    model.eval()
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def first_tensor(output):
    return output if isinstance(output, torch.Tensor) else output[0]


def assert_eval_function(actual: torch.Tensor, reference: torch.Tensor) -> None:
    """The contract's equality of eval functions in fp32: within 1e-5 x max(1, max |output|), the
    tolerance ``CollapseReport.exact`` uses. A fixed 1e-5 would fail outputs in the tens that
    differ only by float rounding of a reordered sum (efficientnet_b3's head: 2.6e-5 on logits up
    to 75)."""
    torch.testing.assert_close(actual, reference, rtol=0, atol=1e-5 * max(1.0, reference.abs().max().item()))
