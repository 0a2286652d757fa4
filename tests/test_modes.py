import pytest
from hypothesis import given, strategies as st

from annsnn.errors import UsageError
from annsnn.modes import MAX_TIME_STEPS, ScaleMode, parse_mode, parse_time_steps


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max", ScaleMode("max")),
        ("MAX", ScaleMode("max")),
        ("99.99", ScaleMode("percentile", 99.99)),
        ("99.99%", ScaleMode("percentile", 99.99)),
        ("99.9", ScaleMode("percentile", 99.9)),
        ("50%", ScaleMode("percentile", 50.0)),
        ("0.5%", ScaleMode("percentile", 0.5)),
        ("100", ScaleMode("max")),
        ("1", ScaleMode("max")),
        ("1/3", ScaleMode("fraction", 1 / 3)),
        ("0.5", ScaleMode("fraction", 0.5)),
        ("2/4", ScaleMode("fraction", 0.5)),
    ],
)
def test_valid_modes(text, expected):
    assert parse_mode(text) == expected


@pytest.mark.parametrize("text", ["101", "-1", "abc", "0", "1/0", "", "nan", "inf", "3/2", "0%", "101%", "1/-3", "99.99%%"])
def test_invalid_modes_are_one_line_errors(text):
    with pytest.raises(UsageError) as info:
        parse_mode(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, expected", [("5,20,50", (5, 20, 50)), ("50,5,20,5", (5, 20, 50)), (" 8 ", (8,)), ("1", (1,))])
def test_time_steps_sorted_and_deduplicated(text, expected):
    assert parse_time_steps(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "-5", "x", "a,b", "", ",", "5,,0", "1.5", str(MAX_TIME_STEPS + 1)])
def test_invalid_time_steps(text):
    with pytest.raises(UsageError):
        parse_time_steps(text)


@given(st.one_of(st.text(max_size=12), st.floats(allow_nan=True).map(str), st.integers(-10**6, 10**6).map(str)))
def test_mode_parser_accepts_or_raises_usage_error(text):
    try:
        mode = parse_mode(text)
    except UsageError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert mode.kind in ("max", "percentile", "fraction")
        assert 0 < mode.value <= 100


@given(st.one_of(st.text(max_size=20), st.lists(st.integers(-5, 200_000), max_size=5).map(lambda v: ",".join(map(str, v)))))
def test_time_parser_accepts_or_raises_usage_error(text):
    try:
        steps = parse_time_steps(text)
    except UsageError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert list(steps) == sorted(set(steps)) and all(1 <= t <= MAX_TIME_STEPS for t in steps)
