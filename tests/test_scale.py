"""The explicit Scale type (issue 11, item 4): no NaN sentinel, granularity a field."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from annsnn.scale import Scale, ScaleError

SHAPE = (1, 4, 3, 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_values_are_checked_finite_and_positive_when_built(bad):
    with pytest.raises(ScaleError):
        Scale.tensor(bad)
    value = torch.ones(SHAPE)
    value[0, 1, 1, 1] = bad
    with pytest.raises(ScaleError):
        Scale(value, "element")


def test_granularity_is_a_field_checked_against_the_value():
    with pytest.raises(ScaleError):
        Scale(torch.ones(4), "tensor")
    with pytest.raises(ScaleError):
        Scale(torch.ones(()), "channel", 1)
    with pytest.raises(ScaleError):
        Scale(torch.ones(4), "channel")  # no axis
    with pytest.raises(ScaleError):
        Scale(torch.ones(SHAPE), "element", None, torch.ones(4, dtype=torch.bool))


def _padded(scale: float = 2.0) -> Scale:
    """Channels 0 and 3 are zero padding (free), 1 and 2 carry ``scale``."""
    free = torch.zeros(SHAPE, dtype=torch.bool)
    free[:, [0, 3]] = True
    return Scale.element(torch.full(SHAPE, scale), free)


def test_free_positions_are_skipped_by_comparisons_and_keep_scalars_scalar():
    padded = _padded(2.0)
    assert padded.equal(Scale.tensor(2.0), SHAPE) and not padded.equal(Scale.tensor(3.0), SHAPE)
    assert padded.is_scalar(SHAPE) and padded.scalar(SHAPE) == 2.0
    # item 26: the factor to ANN units is one number, not a tensor with zeros at the padding
    factor = padded.ratio(Scale.one(), SHAPE).to_factor(SHAPE)
    assert factor.dim() == 0 and float(factor) == 2.0


def test_merge_takes_the_constrained_operand_in_either_order():
    padded, branch = _padded(2.0), Scale.channel(torch.tensor([5.0, 6.0, 7.0, 8.0]), 1)
    for merged in (padded.merge(branch, SHAPE), branch.merge(padded, SHAPE)):
        assert merged.free is None
    first = padded.merge(branch, SHAPE).channel_values(SHAPE)
    assert first.tolist() == [5.0, 2.0, 2.0, 8.0]  # padding never sets the scale
    assert branch.merge(padded, SHAPE).channel_values(SHAPE).tolist() == [5.0, 6.0, 7.0, 8.0]


def test_per_channel_keeps_free_channels_free_and_refuses_varying_channels():
    channel = _padded(2.0).per_channel(SHAPE)
    assert channel.granularity == "channel" and channel.free.tolist() == [True, False, False, True]
    varying = torch.ones(SHAPE)
    varying[0, 1, 0, 0] = 3.0
    with pytest.raises(ScaleError):
        Scale.element(varying).per_channel(SHAPE)


def test_ratio_needs_a_target_that_constrains_the_source():
    with pytest.raises(ScaleError):
        Scale.tensor(2.0).ratio(_padded(), SHAPE)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=4, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4))
def test_ratio_brings_a_value_to_the_target_scale(values, free_channels):
    """x_ann = s_src * x; after x * ratio it is s_tgt * x'. Free positions hold zeros."""
    free = torch.tensor(free_channels).view(1, 4, 1, 1).expand(SHAPE)
    src = Scale.element(torch.tensor(values).view(1, 4, 1, 1).expand(SHAPE).clone(), free.clone())
    target = Scale.channel(torch.tensor(values[::-1]), 1)
    x = torch.rand(SHAPE).masked_fill(free, 0.0)
    ann = src.full(SHAPE) * x
    factor = src.ratio(target, SHAPE).to_factor(SHAPE)
    assert torch.allclose(target.full(SHAPE) * (x * factor), ann, rtol=1e-5)
