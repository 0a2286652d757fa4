"""Safe loading: weights_only by default; a malicious pickle runs nothing without --trust."""

import pytest
import torch
from torch import nn

from annsnn.errors import UsageError
from annsnn.model_files import load_model
from annsnn.zoo import build


class _Payload:
    """Unpickling this creates the marker file (via a harmless builtin)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_malicious(path, marker):
    torch.save({"state_dict": _Payload(str(marker))}, str(path))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    _write_malicious(evil, marker)
    assert not marker.exists()
    with pytest.raises(UsageError, match="--trust"):
        load_model(evil, "mlp_s")
    assert not marker.exists()


def test_whole_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(2, 2)), str(path))
    with pytest.raises(UsageError, match="--trust"):
        load_model(path)
    loaded = load_model(path, trust=True)
    assert isinstance(loaded.module, nn.Sequential) and loaded.kind == "pickle"


def test_state_dict_with_wrappers_and_prefixes(tmp_path):
    model = build("mlp_s")
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "best_prec1": 1.0}, str(path))
    loaded = load_model(path, "mlp_s")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)


def test_state_dict_needs_arch_and_must_fit(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build("mlp_s").state_dict(), str(path))
    with pytest.raises(UsageError, match="--arch"):
        load_model(path)
    with pytest.raises(UsageError, match="missing keys|unexpected keys") as info:
        load_model(path, "mlp_m")
    assert "\n" not in str(info.value)


def test_torchscript_and_onnx(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    ts = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(model), str(ts))
    assert load_model(ts).kind == "torchscript"
    onnx_path = tmp_path / "m.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3),), str(onnx_path), dynamo=False)
    loaded = load_model(onnx_path)
    x = torch.randn(5, 3)
    assert loaded.kind == "onnx" and torch.allclose(loaded.module(x), model(x), atol=1e-5)


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (b"", ".pt", "empty"),
        (b"this is text, not a checkpoint\n", ".pt", "not a valid checkpoint"),
        (b"garbage", ".pt", "not a valid checkpoint"),
        (b"garbage", ".onnx", "not a valid ONNX"),
        (b"x", ".h5", "unknown model file type"),
    ],
)
def test_bad_files(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_model(path, "mlp_s")


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(build("mlp_s").state_dict(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="not a valid checkpoint"):
        load_model(path, "mlp_s")


def test_missing_file():
    with pytest.raises(UsageError, match="does not exist"):
        load_model("/nonexistent/model.pt")


def test_a_corrupt_image_in_a_folder_is_one_usage_error_naming_the_file(tmp_path):
    from PIL import Image

    from annsnn.data import load_dataset, make_loader
    from annsnn.errors import UsageError

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / cls / "ok.png")
    (tmp_path / "b" / "zz.jpg").write_bytes(b"\xff\xd8\xff garbage")
    dataset = load_dataset(f"imagefolder:{tmp_path}", "test")
    assert dataset[0][0].shape == (3, 4, 4)
    with pytest.raises(UsageError, match=r"zz\.jpg"):
        for _ in make_loader(dataset, 2):
            pass


def test_activation_memory_estimate_is_the_closed_form_largest_layer():
    from annsnn.memory_estimate import check_fits, estimate_activation_memory

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    # conv: in 1·8·8·4 B + out 4·8·8·4 B = 1280; relu: 1024 + 1024 = 2048; flatten 2048; linear 1024 + 40
    estimate = estimate_activation_memory(model, (1, 8, 8))
    assert (estimate.bytes_per_sample, estimate.layer) == (2048, "1")
    assert check_fits(model, (1, 8, 8), 1, available=2048) == estimate
    with pytest.raises(UsageError, match="needs at least"):
        check_fits(model, (1, 8, 8), 1, available=2047)
    with pytest.raises(UsageError, match="batch-size"):
        check_fits(model, (1, 8, 8), 2, available=4095)


def test_huge_input_is_estimated_without_allocating():
    from annsnn.memory_estimate import estimate_activation_memory
    from annsnn.zoo import build

    estimate = estimate_activation_memory(build("resnet20").eval(), (3, 60000, 60000))
    # the first conv's output (16 channels) plus its BatchNorm's output: 2 · 16 · 60000² · 4 bytes
    assert estimate.bytes_per_sample == 2 * 16 * 60000 * 60000 * 4


def _split_folder(root, splits):
    """``root/<split>/<class>/i.png``: 4x4 images; ``splits`` maps a split to its classes."""
    from PIL import Image

    for split, classes in splits.items():
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (4, 4), (40 * k, 10 * i, 0)).save(root / split / cls / f"{i}.png")


def test_the_conversions_dataset_spec_reads_the_training_split_only(tmp_path):
    """Calibration uses training data only: the spec convert reads (classes, image size) came
    from the test split, so a bad test image stopped a conversion and test/ set the class count."""
    from annsnn.data import dataset_spec

    _split_folder(tmp_path, {"train": ["a", "b", "c"], "val": ["a", "b", "c"]})
    (tmp_path / "val" / "a" / "zz.jpg").write_bytes(b"\xff\xd8\xff garbage")  # never read by convert
    spec = dataset_spec(f"imagefolder:{tmp_path}")
    assert (spec.num_classes, tuple(spec.input_shape)) == (3, (3, 4, 4))


@pytest.mark.parametrize("kind", ["imagefolder", "imagenet"])
def test_splits_with_different_class_folders_are_refused(tmp_path, kind):
    """A test split without class 'a' numbered 'b' as 0 (ImageFolder numbers each split's own
    sorted folders): every label shifted and the accuracy was silently wrong."""
    from annsnn.data import load_dataset

    _split_folder(tmp_path, {"train": ["a", "b", "c"], "val": ["b", "c"]})
    with pytest.raises(UsageError, match=r"class folders of train/ and val/ differ: a only in train/"):
        load_dataset(f"{kind}:{tmp_path}", "test")
    with pytest.raises(UsageError, match="class folders of train/ and val/ differ"):
        load_dataset(f"{kind}:{tmp_path}", "train")


def test_a_folder_with_only_train_is_its_training_split_and_has_no_test_split(tmp_path):
    """``train/`` alone was taken for one class named 'train', scored against itself."""
    from annsnn.data import load_dataset

    _split_folder(tmp_path, {"train": ["a", "b", "c"]})
    train = load_dataset(f"imagefolder:{tmp_path}", "train")
    assert train.classes == ["a", "b", "c"] and len(train) == 6
    with pytest.raises(UsageError, match="has train/ but no test/ or val/"):
        load_dataset(f"imagefolder:{tmp_path}", "test")


@pytest.mark.parametrize("field,value", [("normalization", {"mean": None, "std": None}), ("normalization", {"mean": [0.3], "std": [0.0]}),
                                         ("num_classes", -3), ("dataset", 123), ("input_shape", [1, -8, 8]), ("arch", ["digits_cnn"])])
def test_a_damaged_annsnn_checkpoint_field_is_one_line(tmp_path, field, value):
    """The record beside the weights was used unchecked: internal errors (TypeError,
    negative dimension, AttributeError) later, exit 1 instead of 2."""
    from annsnn.zoo import embedded_checkpoint

    checkpoint = torch.load(embedded_checkpoint(), weights_only=True)
    assert load_model(embedded_checkpoint()).arch == "digits_cnn"  # the good one loads
    checkpoint[field] = value
    torch.save(checkpoint, tmp_path / "ck.pt")
    with pytest.raises(UsageError, match=f"damaged annsnn checkpoint: its {field} field cannot be read"):
        load_model(tmp_path / "ck.pt")
