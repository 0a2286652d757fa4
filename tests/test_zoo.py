
import pytest
import torch
from torch import nn

from annsnn.convert import ConversionOptions
from annsnn.counting import count_ann, dense_macs
from annsnn.pipeline import ann_to_snn
from annsnn.zoo import architectures, build, embedded_checkpoint

SMALL = [name for name, spec in architectures().items() if spec.dataset != "imagefolder"]  # not ImageNet-size


@pytest.mark.parametrize("name", SMALL)
def test_every_small_architecture_builds_runs_counts_and_converts(name):
    spec = architectures()[name]
    model = build(name).eval()
    x = torch.rand(2, *spec.input_shape)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    counts = count_ann(model, spec.input_shape)
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: shapes.__setitem__(n, a[0].shape[1:])) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # input shapes
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    closed = sum(dense_macs(m, tuple(shapes[n])) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert counts.macs == closed
    snn, report = ann_to_snn(model, [x], input_shape=spec.input_shape, options=ConversionOptions.plain())
    assert report.neurons > 0 and all(layer.spiking for layer in report.layers)


def test_embedded_checkpoint_is_small_and_records_its_data():
    path = embedded_checkpoint()
    assert path.stat().st_size < 1_000_000
    data = torch.load(str(path), weights_only=True)
    assert data["arch"] == "digits_cnn" and data["dataset"] == "digits" and data["test_top1"] > 0.95


def test_one_epoch_of_training_beats_chance():
    from annsnn.zoo.train import TrainConfig, train

    result = train(TrainConfig(arch="digits_cnn", dataset="digits", epochs=1, seed=0))
    assert result.test_top1 > 0.3


def test_training_is_deterministic_with_a_seed():
    from annsnn.zoo.train import TrainConfig, train

    config = TrainConfig(arch="digits_cnn", dataset="digits", epochs=1, seed=3, train_samples=256)
    first, second = train(config), train(config)
    for (k, v), (_, w) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(v, w), k


LARGE = [name for name, spec in architectures().items() if spec.dataset == "imagefolder"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_imagenet_size_architectures_build_count_and_convert(name):
    spec = architectures()[name]
    model = build(name).eval()
    x = torch.rand(2, *spec.input_shape)
    counts = count_ann(model, spec.input_shape)
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: shapes.__setitem__(n, a[0].shape[1:])) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]  # input shapes
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 1000)
    for h in hooks:
        h.remove()
    assert counts.macs == sum(dense_macs(m, tuple(shapes[n])) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    snn, report = ann_to_snn(model, [x], input_shape=spec.input_shape, options=ConversionOptions.plain())
    assert report.neurons > 0 and len(report.layers) == sum(1 for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6)))
