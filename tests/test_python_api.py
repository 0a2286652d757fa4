"""The Python API as a training script uses it (fourth review): labels, batch-size reads,
the user's model left as it was, SpikingJelly nets with BatchNorm, DataLoaders of (x, y)
pairs, and one clear error for inputs the network cannot take."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import annsnn
from annsnn import Analyzer, ConversionOptions, ann_to_snn, simulate
from annsnn.errors import UsageError


def _small(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, classes)).eval()


@pytest.fixture(scope="module")
def small_snn():
    model = _small()
    snn, _ = ann_to_snn(model, [torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    return model, snn


@pytest.mark.parametrize("shape", ["column", "one-hot", "short"])
def test_labels_that_are_not_one_index_per_image_are_refused(small_snn, shape):
    """[B, 1] labels broadcast against [B] predictions: the ANN's own predictions scored
    3.75 (375 %) as top-1."""
    model, snn = small_snn
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    bad = {"column": y[:, None], "one-hot": F.one_hot(y, 5), "short": y[:4]}[shape]
    analyzer = Analyzer(snn, [8])
    with pytest.raises(UsageError, match="labels"):
        analyzer.run(x, bad)
    analyzer.run(x, y)
    assert analyzer.report().ann.top1 == 1.0


def test_classification_metrics_refuses_labels_of_another_shape():
    from annsnn.metrics import classification_metrics

    with pytest.raises(ValueError, match="labels"):
        classification_metrics(torch.tensor([0, 0, 1]), torch.tensor([[0], [0], [1]]), 4)
    assert classification_metrics(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 4).top1 == 2 / 3


class _BatchSizeRead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(256, 5)

    def forward(self, x):
        b = x.size(0)  # the common idiom
        return self.fc(F.relu(self.conv(x)).view(b, -1))


class _BatchSizeSlice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(256, 5)

    def forward(self, x):
        h = F.relu(self.conv(x)).flatten(1)
        return self.fc(h[: x.shape[0]])  # the input's batch size, on a time-varying value


def test_a_reshape_by_the_input_batch_size_simulates_at_every_chunk():
    """b = x.size(0); h.view(b, -1): converted as equivalent, then the default simulate (T
    steps as one batch) failed with a shape error. The reshape is batch-major: -1."""
    torch.manual_seed(0)
    model = _BatchSizeRead().eval()
    snn, _ = ann_to_snn(model, [torch.rand(32, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    x = torch.rand(4, 3, 8, 8)
    merged = simulate(snn, x, 8).outputs[8]
    assert torch.equal(merged, simulate(snn, x, 8, chunk=1).outputs[8])


def test_a_batch_size_read_on_a_time_varying_value_is_refused_at_conversion():
    torch.manual_seed(0)
    with pytest.raises(UsageError, match="batch size"):
        ann_to_snn(_BatchSizeSlice().eval(), [torch.rand(32, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())


def test_the_users_model_keeps_its_training_mode():
    """Converting or counting mid-training switched the user's model to eval mode for good:
    the script trained on with dropout off and BatchNorm frozen."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(256, 5)).train()
    model[1].eval()  # a mix, kept as it is
    before = [m.training for m in model.modules()]
    ann_to_snn(model, [torch.rand(32, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    assert [m.training for m in model.modules()] == before
    annsnn.count_ann(model, (3, 8, 8))
    assert [m.training for m in model.modules()] == before
    annsnn.check_model("m", model, (3, 8, 8))
    assert [m.training for m in model.modules()] == before
    annsnn.canonicalize(model, input_shape=(3, 8, 8))
    assert [m.training for m in model.modules()] == before


def test_a_spikingjelly_net_with_batchnorm_is_folded_and_agrees_with_spikingjelly():
    from spikingjelly.activation_based import functional, layer, neuron

    from annsnn.foreign_snn import from_spikingjelly

    torch.manual_seed(0)
    net = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), layer.BatchNorm2d(4), neuron.IFNode(), layer.Flatten(), layer.Linear(144, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    functional.set_step_mode(net, "m")
    net.eval()
    x = torch.rand(4, 2, 6, 6)
    T = 6
    with torch.no_grad():
        functional.reset_net(net)
        expected = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).sum(0)
    snn = from_spikingjelly(net, (2, 6, 6))
    got = simulate(snn, x, T).outputs[T]
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_a_dataloader_of_image_label_pairs_calibrates_on_the_images():
    model = _small()
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    loader = DataLoader(TensorDataset(images, torch.randint(0, 5, (64,))), batch_size=16)
    from_pairs, _ = ann_to_snn(model, loader, input_shape=(3, 8, 8), options=ConversionOptions.plain())
    from_images, _ = ann_to_snn(model, [images[i : i + 16] for i in range(0, 64, 16)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(simulate(from_pairs, x, 8).outputs[8], simulate(from_images, x, 8).outputs[8])


def test_non_finite_calibration_images_have_their_own_message():
    x = torch.rand(32, 3, 8, 8)
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(UsageError, match="NaN or infinite"):
        ann_to_snn(_small(), [x], input_shape=(3, 8, 8), options=ConversionOptions.plain())


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8])
def test_calibration_batches_of_another_dtype_are_one_clear_error(dtype):
    x = (torch.rand(32, 3, 8, 8) * 255).to(dtype)
    with pytest.raises(UsageError, match="float32"):
        ann_to_snn(_small(), [x], input_shape=(3, 8, 8), options=ConversionOptions.plain())


def test_a_float64_model_is_refused_without_blaming_the_input_shape():
    with pytest.raises(UsageError, match="float64") as info:
        ann_to_snn(_small().double(), [torch.rand(32, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    assert "--input-shape" not in str(info.value)


def test_clamp_at_infinity_is_a_relu():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.l = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(256, 5)

        def forward(self, x):
            return self.l(self.c(x).clamp(0, float("inf")).flatten(1))

    torch.manual_seed(0)
    net = Net().eval()
    snn, report = ann_to_snn(net, [torch.rand(32, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    assert [layer.ceiling for layer in report.layers if layer.spiking] == [None]


def test_simulate_and_analyzer_refuse_inputs_the_snn_was_not_made_for(small_snn):
    _, snn = small_snn
    with pytest.raises(UsageError, match=r"\[3, 8, 8\]"):
        Analyzer(snn, [4]).run(torch.rand(2, 3, 16, 16))
    with pytest.raises(UsageError, match="no images"):
        Analyzer(snn, [4]).run(torch.rand(0, 3, 8, 8))
    with pytest.raises(UsageError, match="float32"):
        Analyzer(snn, [4]).run(torch.rand(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(UsageError, match="whole number"):
        simulate(snn, torch.rand(2, 3, 8, 8), 4.0)


def test_options_of_the_wrong_type_are_one_clear_error():
    from annsnn.modes import parse_mode

    with pytest.raises(UsageError, match="ScaleMode"):
        ConversionOptions.plain("99.9")
    with pytest.raises(UsageError, match="ConversionOptions"):
        ann_to_snn(_small(), [torch.rand(8, 3, 8, 8)], input_shape=(3, 8, 8), options={"mode": "99.9"})
    assert ConversionOptions.plain(parse_mode("99.9")).mode == parse_mode("99.9")


def test_a_batchnorm_without_running_statistics_is_refused_for_what_it_is():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.Flatten(), nn.Linear(256, 5)).eval()
    with pytest.raises(UsageError, match="running statistics") as info:
        ann_to_snn(model, [torch.rand(8, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    assert "does not follow" not in str(info.value)


def test_reports_say_when_their_ann_row_is_the_avgpool_variant():
    """--maxpool avg scores a changed ANN (max-pools made average pools): evaluate and energy
    printed its top-1 and gap as the model's, with nothing to say so (only convert did)."""
    from annsnn.robustness import RobustnessSpec, run_robustness

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5)).eval()
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 5, (16,))
    notes = {}
    for pool in ("spiking", "avg"):
        snn, _ = ann_to_snn(model, [x], input_shape=(3, 8, 8), options=ConversionOptions.plain(maxpool=pool))
        with Analyzer(snn, [4]) as analyzer:
            analyzer.run(x, y)
        robust = run_robustness(snn, [(x, y)], RobustnessSpec(time_steps=(4,), gaussian=(0.1,)))
        notes[pool] = (analyzer.report().notes, robust.notes)
    assert not any("--maxpool avg" in n for part in notes["spiking"] for n in part)
    assert all(any("--maxpool avg" in n for n in part) for part in notes["avg"])


def test_robustness_notes_describe_only_the_rows_it_has():
    from annsnn.robustness import RobustnessSpec, run_robustness

    snn, _ = ann_to_snn(_small(), [torch.rand(16, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 5, (8,))
    result = run_robustness(snn, [(x, y)], RobustnessSpec(time_steps=(2,), fgsm=(0.1,), attack_on="snn"))
    assert not any(n.startswith("noise:") or "crafted_on=ann" in n for n in result.notes), result.notes
    assert any("crafted_on=snn" in n for n in result.notes)


def test_max_pool_refusals_name_their_cause_and_the_way_out():
    """With --max-spikes the refusal blamed 'a sum or rescaling of spike trains'; NIR's refusal
    of a spiking max-pool did not name --maxpool avg, which NIR can express."""
    from annsnn.nir_io import to_nir

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5)).eval()
    x = torch.rand(16, 3, 8, 8)
    with pytest.raises(UsageError, match="burst neurons"):
        ann_to_snn(model, [x], input_shape=(3, 8, 8), options=ConversionOptions.plain(max_spikes=2))
    snn, _ = ann_to_snn(model, [x], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    with pytest.raises(UsageError, match="--maxpool avg"):
        to_nir(snn)
