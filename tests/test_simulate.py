import pytest
import torch
from torch import nn

from annsnn.conversion_options import ConversionOptions
from annsnn.analyzer import Analyzer
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate

from conftest import train_quick


@pytest.fixture(scope="module")
def trained(digits):
    (xtr, ytr), (xte, yte) = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    model = train_quick(model, xtr, ytr, epochs=10)
    snn, _ = ann_to_snn(model, [xtr[:512]], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    return snn, xte, yte


def test_prefix_readout_equals_separate_runs(trained):
    snn, x, _ = trained
    long = simulate(snn, x[:64], [5, 20, 50])
    for k in (5, 20, 50):
        alone = simulate(snn, x[:64], [k])
        assert torch.equal(long.outputs[k], alone.outputs[k])


def test_chunked_equals_unchunked(trained):
    snn, x, _ = trained
    whole = simulate(snn, x[:32], [40], chunk=40)
    for chunk in (1, 3, 7):
        assert torch.equal(simulate(snn, x[:32], [40], chunk=chunk).outputs[40], whole.outputs[40])


def test_direct_encoding_computes_the_first_layer_once(trained):
    snn, x, _ = trained
    first = next(m for m in snn.graph.modules() if isinstance(m, nn.Conv2d))
    batches = []
    hook = first.register_forward_hook(lambda mod, a, out: batches.append(out.shape[0]))
    simulate(snn, x[:8], [12], chunk=4)
    hook.remove()
    assert batches == [8]  # once for the whole run (not once per chunk), at batch size B, never K*B


def test_poisson_is_reproducible_with_a_seed(trained):
    snn, x, _ = trained
    run = lambda seed: simulate(snn, x[:16], [30], encoding="poisson", generator=torch.Generator().manual_seed(seed)).outputs[30]
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_memory_state_is_reset_between_batches(trained):
    snn, x, _ = trained
    a = simulate(snn, x[:16], [10]).outputs[10]
    simulate(snn, x[16:32], [10])
    assert torch.equal(simulate(snn, x[:16], [10]).outputs[10], a)


def test_ann_and_snn_see_the_same_samples(trained):
    snn, x, y = trained
    analyzer = Analyzer(snn, [4, 8], count=False)
    seen = []
    hook = snn.ann.register_forward_hook(lambda mod, a, out: seen.append(a[0].clone()))
    for i in range(0, 96, 32):
        analyzer.run(x[i : i + 32], y[i : i + 32])
    hook.remove()
    result = analyzer.report()
    assert result.samples == 96 and torch.equal(torch.cat(seen), x[:96])
    assert torch.equal(torch.cat([analyzer._records[i]["labels"] for i in sorted(analyzer._records)]), y[:96])
    for row in result.rows:
        assert 0 <= row.top1 <= 1 and 0 <= row.agreement <= 1


def test_accuracy_is_monotone_on_a_trained_model(trained):
    snn, x, y = trained
    with Analyzer(snn, [8, 256], count=False) as analyzer:
        analyzer.run(x, y)
    rows = {row.T: row for row in analyzer.report().rows}
    assert rows[256].top1 >= rows[8].top1
    assert rows[256].agreement >= 0.97


def test_readout_is_the_plain_step_sum(trained):
    """The in-place readout equals summing each step's output (recorded by a hook) in step
    order, bit for bit, with and without a readout delay."""
    snn, x, _ = trained
    steps: list[torch.Tensor] = []
    handle = snn.split_runner("direct").temporal.register_forward_hook(lambda mod, args, out: steps.append(out.reshape(-1, 16, out.shape[-1]).clone()))
    try:
        result = simulate(snn, x[:16], [3, 9], chunk=4, readout_delay=2)
    finally:
        handle.remove()
    per_step = torch.cat(steps)
    for T, d in ((3, 2), (9, 2)):
        expected = per_step[d].clone()
        for t in range(d + 1, T):
            expected = expected + per_step[t]
        assert torch.equal(result.outputs[T], expected)


def test_auto_chunk_merges_every_step_on_a_gpu_when_memory_allows(trained, monkeypatch):
    """CPU: 8 MiB per activation tensor. GPU: 1/16 of the free memory, so K = T unless an
    activation [T*B, ...] would not fit: K = floor(free / 16 / (4 * numel * B))."""
    from annsnn.simulate import auto_chunk

    snn, _, _ = trained
    numel = snn.record.max_activation_numel
    assert auto_chunk(snn, 64, 32) == min(32, max(1, 8 * 1024 * 1024 // (4 * numel * 64)))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (16 << 30, 80 << 30))
    assert auto_chunk(snn, 256, 32, device="cuda") == 32
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * numel * 1000 * 16 * 5, 80 << 30))
    assert auto_chunk(snn, 1000, 32, device="cuda") == 5


class _InPlaceOnStatic(nn.Module):
    """A static value (the first conv's output) updated in place by a time-varying one."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        y = self.c(x)
        h = self.c2(torch.relu(y))
        y = y.add_(h)
        return self.fc(torch.relu(y).flatten(1))


def test_an_in_place_op_on_a_static_value_does_not_leak_into_later_chunks():
    """The static part runs once per call; at one step per chunk the repeated value must be
    a copy, or ``y.add_(h)`` writes into the value every later chunk reads. The step-by-step
    ``snn(x)`` (static part recomputed at every call) is the reference."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 8, 8)
    snn, _ = ann_to_snn(_InPlaceOnStatic().eval(), [x], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    snn.reset()
    acc = snn(x)
    for _ in range(5):
        acc = acc + snn(x)
    assert torch.equal(simulate(snn, x, [6], chunk=1, readout_delay=0).outputs[6], acc)
    assert torch.allclose(simulate(snn, x, [6], chunk=6, readout_delay=0).outputs[6], acc, atol=1e-5)


def test_the_split_runner_follows_a_rebuilt_runner(trained):
    """Clearing the runner cache (as a caller that swaps modules does) rebuilds the split too."""
    snn, x, _ = trained
    simulate(snn, x[:8], [4], chunk=2)
    old = snn.split_runner("direct")
    snn._runners.clear()
    assert snn.split_runner("direct") is not old
    assert snn.split_runner("direct").source is snn.runner("direct")


def test_the_static_value_is_copied_only_for_a_reader_that_may_write_into_it(trained):
    """At one step per chunk the repeat is a view of the held static value: an IF layer (which
    never writes into its input) reads it as is, any other reader gets a copy."""
    from annsnn.layers import TimeExpand

    snn, _, _ = trained
    expands = [m for m in snn.runner("direct").modules() if isinstance(m, TimeExpand)]
    assert expands and all(not m.copy for m in expands)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    other, _ = ann_to_snn(_InPlaceOnStatic().eval(), [x], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    assert any(m.copy for m in other.runner("direct").modules() if isinstance(m, TimeExpand))


def test_one_image_and_several_steps_per_chunk_with_an_in_place_reader():
    """At batch 1 the repeat over K steps is a stride-0 view too: a reader that writes in place
    gets a copy (it raised 'more than one element of the written-to tensor refers to a single
    memory location')."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8)
    snn, _ = ann_to_snn(_InPlaceOnStatic().eval(), [torch.rand(4, 3, 8, 8)], input_shape=(3, 8, 8), options=ConversionOptions.plain())
    snn.reset()
    acc = snn(x)
    for _ in range(5):
        acc = acc + snn(x)
    assert torch.allclose(simulate(snn, x, [6], chunk=3, readout_delay=0).outputs[6], acc, atol=1e-5)
