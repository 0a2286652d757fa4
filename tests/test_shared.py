"""Real data and weights from ../shared (skipped with a reason when absent)."""
import pytest
import torch

from annsnn.analyzer import Analyzer
from annsnn.convert import ConversionOptions
from annsnn.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset, make_loader
from annsnn.model_files import load_model
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def resnet20(resnet20_weights):
    raw = torch.load(str(resnet20_weights), map_location="cpu", weights_only=True)
    loaded = load_model(resnet20_weights, "resnet20")
    state = {k.removeprefix("module."): v for k, v in raw["state_dict"].items()}
    expected = {k for k in loaded.module.state_dict() if not k.endswith('num_batches_tracked')}
    assert set(state) == expected  # no missing or unexpected keys (BN counters predate this file)
    for key, value in state.items():
        assert torch.equal(loaded.module.state_dict()[key], value)
    return loaded.module


@pytest.fixture(scope="module")
def cifar(cifar_jpeg):
    name = f"imagefolder:{cifar_jpeg}"
    return load_dataset(name, "train"), load_dataset(name, "test")


def _normalized(model):
    from annsnn.graph import WithInputNormalization

    return WithInputNormalization(model, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()


def test_resnet20_ann_accuracy_on_jpeg_test_set(resnet20, cifar):
    _, test = cifar
    model = _normalized(resnet20)
    correct = total = 0
    with torch.no_grad():
        for x, y in make_loader(test, 250, 500):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    assert total == 500 and abs(correct / total - 0.81) <= 0.03


@pytest.fixture(scope="module")
def resnet20_snn(resnet20, cifar):
    train, _ = cifar
    calib = (x for x, _ in make_loader(train, 128, 1024))
    options = ConversionOptions.plain(mode=parse_mode("99.99"), v_init=0.5)
    snn, report = ann_to_snn(resnet20, calib, input_shape=(3, 32, 32), options=options, normalization=(list(IMAGENET_MEAN), list(IMAGENET_STD)))
    assert report.calibration_samples == 1024 and len(report.layers) == 19
    return snn


def test_resnet20_snn_tracks_ann_at_T512_on_a_fixed_batch(resnet20_snn, cifar):
    _, test = cifar
    x, _ = next(iter(make_loader(test, 16, 16)))
    ann = resnet20_snn.ann(x).argmax(1)
    result = simulate(resnet20_snn, x, [512])
    assert float((result.predictions(512) == ann).float().mean()) >= 0.99


@pytest.mark.slow
def test_resnet20_snn_within_one_point_at_T128_on_1000_images(resnet20_snn, cifar):
    _, test = cifar
    with Analyzer(resnet20_snn, [128], count=False) as analyzer:
        for x, y in make_loader(test, 125, 1000):
            analyzer.run(x, y)
    result = analyzer.report()
    assert result.samples == 1000
    assert abs(result.rows[0].gap) <= 0.01, (result.ann.top1, result.rows[0].top1)


def test_mnist_loads_from_shared(shared):
    from collections import Counter

    test = load_dataset("mnist", "test", shared / "data")
    train = load_dataset("mnist", "train", shared / "data")
    assert len(test) == 10_000 and len(train) == 60_000
    counts = Counter(train.targets.tolist())
    assert [counts[i] for i in range(10)] == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
