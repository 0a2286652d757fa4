"""ImageNet-size data (issue 24 item 3): ``imagenet:ROOT``, preprocessing by --resize/--crop,
by torchvision weights' transforms() and by timm's data config, recorded in the SNN; images
of mixed sizes without preprocessing are one clear line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from annsnn.data import Preprocess, dataset_spec, load_dataset, preprocess_for
from annsnn.errors import UsageError

WNIDS = ("n01440764", "n01443537", "n01484850")


def _jpegs(folder, rng, count: int) -> None:
    for c, wnid in enumerate(WNIDS):
        (folder / wnid).mkdir(parents=True)
        for i in range(count):
            w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / wnid / f"{wnid}_{i}.JPEG", quality=95)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """train/ + val/ of class folders (wnids), JPEGs of random sizes 40..89 px a side."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    _jpegs(root / "train", rng, 4)
    _jpegs(root / "val", rng, 2)
    return root


def _reference(path, resize: int, crop: int) -> torch.Tensor:
    """PIL alone: shorter side to ``resize`` (bilinear, PIL's antialiasing), centre crop, /255."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    nw, nh = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    image = image.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def test_mixed_sizes_without_preprocessing_is_one_clear_line(imagenet_root):
    with pytest.raises(UsageError) as info:
        dataset_spec(f"imagenet:{imagenet_root}")
    message = str(info.value)
    assert "\n" not in message and "must share one size" in message and "--resize N --crop M" in message


def test_resize_and_crop_equal_pil_alone(imagenet_root):
    pre = Preprocess(48, 32)
    spec = dataset_spec(f"imagenet:{imagenet_root}", preprocess=pre)
    assert spec.input_shape == (3, 32, 32) and spec.num_classes == 3
    for split, folder, count in (("train", "train", 12), ("test", "val", 6)):
        data = load_dataset(f"imagenet:{imagenet_root}", split, preprocess=pre)
        assert len(data) == count
        for i in range(count):
            x, y = data[i]
            path, label = data.samples[i]
            assert path.startswith(str(imagenet_root / folder)) and y == label == WNIDS.index(path.split("/")[-2])
            assert torch.allclose(x, _reference(path, 48, 32), atol=1 / 255 + 1e-6)  # PIL rounds to uint8 once; torchvision too


def test_torchvision_meta_bin_layout_reads_as_torchvisions_imagenet(imagenet_root, tmp_path):
    """With meta.bin (torchvision's ImageNet layout): the same images, labels and class names
    as torchvision.datasets.ImageNet itself."""
    import shutil

    from torchvision.datasets import ImageNet

    shutil.copytree(imagenet_root, tmp_path / "tv")
    torch.save(({w: (f"class {w}",) for w in WNIDS}, []), tmp_path / "tv" / "meta.bin")
    pre = Preprocess(48, 32)
    ours, theirs = load_dataset(f"imagenet:{tmp_path / 'tv'}", "test", preprocess=pre), ImageNet(str(tmp_path / "tv"), split="val", transform=pre.transform())
    assert ours.classes == theirs.classes == [(f"class {w}",) for w in WNIDS]
    assert len(ours) == len(theirs) == 6
    for i in range(len(ours)):
        assert torch.equal(ours[i][0], theirs[i][0]) and ours[i][1] == theirs[i][1]


def test_a_missing_split_folder_is_one_line(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UsageError, match="has no val/ folder"):
        load_dataset(f"imagenet:{tmp_path}", "test")


def test_torchvision_weights_give_their_transforms():
    """torchvision's documented eval transforms: ResNet-50 V2 resizes to 232, V1 to 256,
    both crop 224, bilinear."""
    assert preprocess_for("torchvision:resnet50", "IMAGENET1K_V2") == Preprocess(232, 224, "bilinear", "torchvision resnet50 IMAGENET1K_V2.transforms()")
    assert preprocess_for("torchvision:resnet50", "IMAGENET1K_V1").resize == 256
    assert preprocess_for("torchvision:resnet50", "DEFAULT").resize == 232
    with pytest.raises(UsageError, match="unknown --weights 'V9'"):
        preprocess_for("torchvision:resnet50", "V9")
    with pytest.raises(UsageError, match="one or the other"):
        preprocess_for("torchvision:resnet50", "DEFAULT", 256, 224)
    assert preprocess_for("resnet20", None) is None


def test_timm_data_config_equals_timms_own_eval_transform(imagenet_root):
    """timm:NAME reads images as timm's create_transform(**resolve_data_config(model)) does
    (normalization excepted: it lives in the model)."""
    pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config
    import timm

    pre = preprocess_for("timm:resnet18")
    config = resolve_data_config({}, model=timm.create_model("resnet18", pretrained=False))
    theirs = create_transform(**{**config, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})
    ours = pre.transform()
    assert (pre.crop, pre.interpolation) == (224, "bicubic")
    for path, _ in load_dataset(f"imagenet:{imagenet_root}", "test", preprocess=pre).samples:
        image = Image.open(path).convert("RGB")
        assert torch.equal(ours(image), theirs(image))


def test_preprocess_record_round_trips_and_rejects_damage():
    pre = Preprocess(256, 224, "bicubic", "x")
    assert Preprocess.from_dict(pre.to_dict()) == pre and Preprocess.from_dict(None) is None
    with pytest.raises(UsageError):
        Preprocess.from_dict({"resize": 256})
    with pytest.raises(UsageError):
        Preprocess(0, 224)


def test_cli_convert_records_the_preprocessing_and_evaluate_uses_it(imagenet_root, tmp_path, capsys, monkeypatch):
    import torchvision

    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pt")
    code, _, err = run_cli(capsys, "convert", "r18.pt", "--arch", "torchvision:resnet18", "--data", f"imagenet:{imagenet_root}", "--calibration", "none", "--calib-samples", "8", "--out", "r.snn.pt")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "must share one size" in err and "Traceback" not in err
    assert not (tmp_path / "r.snn.pt").exists()
    code, out, err = run_cli(capsys, "convert", "r18.pt", "--arch", "torchvision:resnet18", "--data", f"imagenet:{imagenet_root}", "--resize", "48", "--crop", "32",
                             "--calibration", "none", "--calib-samples", "8", "--out", "r.snn.pt")
    assert code == 0, err
    assert "images: resize 48, centre crop 32, bilinear (--resize/--crop)" in out
    from annsnn.artifact import load_snn

    snn = load_snn(tmp_path / "r.snn.pt")
    assert snn.meta["preprocess"] == Preprocess(48, 32).to_dict() and snn.meta["input_shape"] == [3, 32, 32]
    code, out, err = run_cli(capsys, "evaluate", "r.snn.pt", "--T", "2", "--samples", "6")  # mixed sizes: only the recorded preprocessing reads them
    assert code == 0, err


@pytest.mark.parametrize("record", [Preprocess(20, 40000), Preprocess(40000, 32), Preprocess(48, 33), Preprocess(33, None)])
def test_a_preprocess_record_that_does_not_make_the_inputs_is_damage(record):
    """A hand-edited record (crop 40000) made evaluate allocate tens of GB, then stop with an
    internal error: a record must make the recorded [3, 32, 32] inputs, which it is checked
    against before any image is read."""
    Preprocess(48, 32).check_gives([3, 32, 32])
    Preprocess(32, None).check_gives([3, 32, 48])  # a resize alone sets the shorter side
    with pytest.raises(UsageError, match="the file is damaged"):
        record.check_gives([3, 32, 32])


def test_evaluate_refuses_a_tampered_preprocess_record_in_one_line(imagenet_root, tmp_path, capsys, monkeypatch):
    import torchvision

    from annsnn.artifact import load_snn, save_snn
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pt")
    code, _, err = run_cli(capsys, "convert", "r18.pt", "--arch", "torchvision:resnet18", "--data", f"imagenet:{imagenet_root}", "--resize", "48", "--crop", "32",
                           "--calibration", "none", "--calib-samples", "4", "--out", "r.snn.pt")
    assert code == 0, err
    snn = load_snn(tmp_path / "r.snn.pt")
    snn.record.extra["preprocess"] = {**snn.record.extra["preprocess"], "resize": 20, "crop": 40000}
    save_snn(snn, tmp_path / "t.snn.pt")
    code, out, err = run_cli(capsys, "evaluate", "t.snn.pt", "--T", "2", "--samples", "4")
    assert code == 2 and err.strip().splitlines() == ["error: the SNN file's preprocessing record (resize 20, crop 40000) does not make its 32×32 inputs: the file is damaged"]


def test_named_torchvision_weights_give_their_own_normalization():
    """'--arch torchvision:NAME --weights W' read W's resize and crop but recorded DEFAULT's
    mean and std: for vgg16's IMAGENET1K_FEATURES (std 1/255) the input was 58x off."""
    import torchvision.models as tvm

    from annsnn.torchvision_timm import build_library_arch

    transform = tvm.VGG16_Weights.IMAGENET1K_FEATURES.transforms()
    library = build_library_arch("torchvision:vgg16", weights="IMAGENET1K_FEATURES")
    assert library.normalization == (list(map(float, transform.mean)), list(map(float, transform.std)))
    assert library.normalization != build_library_arch("torchvision:vgg16").normalization
    with pytest.raises(UsageError, match="unknown --weights 'NOPE' for torchvision:vgg16: use one of DEFAULT, IMAGENET1K_V1, IMAGENET1K_FEATURES"):
        build_library_arch("torchvision:vgg16", weights="NOPE")
    assert build_library_arch("torchvision:vgg16", weights="DEFAULT").normalization == build_library_arch("torchvision:vgg16").normalization  # as --weights DEFAULT reads its preprocessing


def test_a_torchvision_state_dict_records_the_named_weights_normalization(tmp_path, monkeypatch):
    """The weights reach the state_dict's loader (convert passed them to zoo:NAME only)."""
    import torchvision

    import annsnn.torchvision_timm as tt
    from annsnn.sources import load_source

    seen = []
    real = tt._torchvision

    def spy(name, state, num_classes, weights_name=None):
        seen.append(weights_name)
        return real(name, state, num_classes, weights_name)

    monkeypatch.setattr(tt, "_torchvision", spy)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pt")
    loaded = load_source(str(tmp_path / "r18.pt"), "torchvision:resnet18", weights="IMAGENET1K_V1")
    assert seen == ["IMAGENET1K_V1"] and loaded.record["input_shape"] == [3, 224, 224]
    with pytest.raises(UsageError, match="--weights W names torchvision weights"):
        load_source(str(tmp_path / "r18.pt"), "resnet20", weights="IMAGENET1K_V1")


def test_16_bit_images_keep_their_levels_not_black_and_white(tmp_path):
    """PIL's convert('RGB') clips a 16-bit image ('I;16') to 0 or 255: calibration and
    evaluation ran on saturated images, silently. Levels now scale as v·255/65535."""
    import numpy as np
    from PIL import Image

    from annsnn.data import _open_image
    from annsnn.errors import UsageError

    values = np.array([[0, 257, 1000, 32768], [40000, 65000, 65535, 128]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # uint16: mode I;16
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(_open_image(str(tmp_path / "deep.png")))
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    assert rgb.shape == (2, 4, 3) and all((rgb[..., c] == expected).all() for c in range(3)), rgb[..., 0]
    Image.fromarray(np.full((2, 2), 1.5, dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(UsageError, match="float.tiff"):
        _open_image(str(tmp_path / "float.tiff"))
