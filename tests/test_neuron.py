import torch
from hypothesis import given, settings, strategies as st

from annsnn.functional import count_max_pool2d, if_soft_reset, if_soft_reset_reference
from annsnn.layers import IFNeurons


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 3, allow_nan=False), st.integers(1, 300))
def test_if_rate_is_clipped_input_within_one_over_T(x, T):
    spikes, _ = if_soft_reset(torch.full((T, 1), x), torch.zeros(1))
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = float(spikes.mean())
    assert abs(rate - min(x, 1.0)) <= 1.0 / T + 1e-6


def test_reset_by_subtraction_keeps_residual():
    spikes, v = if_soft_reset(torch.full((3, 1), 0.7), torch.zeros(1))
    assert spikes.flatten().tolist() == [0.0, 1.0, 1.0]
    assert abs(float(v) - 0.1) < 1e-6


def test_v_init_and_state_carry_across_chunks():
    layer = IFNeurons(v_init=0.5)
    x = torch.full((6, 2), 0.3)  # [K*B] with K=3, B=2
    layer.steps = 3
    first = layer(x)
    second = layer(x)
    whole = IFNeurons(v_init=0.5)
    whole.steps = 6
    both = whole(torch.cat([x, x]))
    assert torch.equal(torch.cat([first.view(3, 2, 2), second.view(3, 2, 2)]), both.view(6, 2, 2))
    # v_init 0.5: 0.5 + 0.3 + 0.3 >= 1 at step 2
    assert first.view(3, 2, 2)[:, 0, 0].tolist() == [0.0, 1.0, 0.0]


def test_spiking_max_pool_count_equals_max_input_count_at_every_step():
    torch.manual_seed(0)
    T = 400
    rates = torch.tensor([0.2, 0.7, 0.69, 0.1]).view(1, 1, 2, 2)
    spikes = (torch.rand(T, 1, 1, 2, 2) < rates).float()
    counts = torch.zeros(1, 1, 2, 2)
    out, _, _ = count_max_pool2d(spikes, counts, torch.zeros(1, 1, 1, 1), (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    cumulative_out = out.cumsum(0).flatten()
    cumulative_max = spikes.cumsum(0).flatten(1).amax(1)
    assert torch.equal(cumulative_out, cumulative_max)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 50), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_fast_kernel_is_bit_identical_to_spikingjelly(T, n, v0, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, n, generator=gen) * 0.8 + 0.3
    ours, v_ours = if_soft_reset(x, torch.full((n,), v0))
    ref, v_ref = if_soft_reset_reference(x, torch.full((n,), v0))
    assert torch.equal(ours, ref) and torch.equal(v_ours, v_ref)
