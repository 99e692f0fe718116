from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from shark.units import MAX_EPOCH, UnitError, check_window, format_size, parse_duration, parse_size, parse_time


@pytest.mark.parametrize(("text", "expected"), [
    ("200MB", 200_000_000), ("1GiB", 1 << 30), ("500Mi", 500 << 20), ("4096", 4096),
    ("1.5GB", 1_500_000_000), (" 10 KiB ", 10240), ("3kb", 3000), (123, 123),
])
def test_sizes(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("12XB", "unknown unit 'XB'"), ("", "is not a size"), ("MB", "is not a size"),
    ("-5MB", "is not a size"), (-1, "negative"), (None, "expected a size"),
])
def test_bad_sizes_say_what_was_expected(text: object, fragment: str) -> None:
    with pytest.raises(UnitError, match="storage_limit") as error:
        parse_size(text, "storage_limit")  # type: ignore[arg-type]
    assert fragment in str(error.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300.0), ("90s", 90.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2d", 172800.0),
    ("12", 12.0), ("0.5", 0.5), (7, 7.0),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["nan", "inf", "-3"])
def test_durations_that_are_numbers_but_not_durations(text: str) -> None:
    with pytest.raises(UnitError, match="since: .* is not a duration"):
        parse_duration(text, "since")


@pytest.mark.parametrize(("text", "position"), [("5x", 1), ("m5", 1), ("5m3", 3), ("", 1)])
def test_bad_durations_name_the_position(text: str, position: int) -> None:
    with pytest.raises(UnitError, match=f"since: .*at character {position}"):
        parse_duration(text, "since")


def test_format_size() -> None:
    assert [format_size(n) for n in (200_000_000, 2 << 20, 512 << 10, 1500, 12)] == [
        "200MB", "2MiB", "512KiB", "1.5KB", "12B"]


@given(st.text(max_size=20))
def test_any_text_parses_or_raises_unit_error(text: str) -> None:
    for parse in (parse_size, parse_duration):
        try:
            value = parse(text)
        except UnitError:
            continue
        assert value >= 0


@pytest.mark.parametrize(("text", "expected"), [
    ("5m", 10000.0 - 300), ("1h30m", 10000.0 - 5400), ("1796600000", 1796600000.0), (12.5, 12.5), (0, 0.0),
    ("100000d", 0.0),        # a duration reaching before 1970: from the start, not an error
])
def test_times_are_epoch_seconds_or_a_duration_ago(text: str | float, expected: float) -> None:
    assert parse_time(text, "since", now=10000.0) == expected


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e300", "-5", 1e300, float("nan"), MAX_EPOCH + 1])
def test_times_past_what_a_timestamp_holds_are_refused_by_name(text: str | float) -> None:
    """nan, inf and 1e300 used to reach the worker's pcap export and kill the request there
    (int(inf * 1e9)); a negative one matched nothing without a word."""
    with pytest.raises(UnitError, match=r"until: .* is not a time; expected epoch seconds from 0 to 9223372036"):
        parse_time(text, "until", now=1000.0)


@pytest.mark.parametrize("text", [True, None, [1]])
def test_times_that_are_not_text_or_numbers(text: object) -> None:
    with pytest.raises(UnitError, match="since: expected epoch seconds or a duration ago"):
        parse_time(text, "since", now=1000.0)  # type: ignore[arg-type]


def test_a_window_that_ends_before_it_starts_is_an_error() -> None:
    check_window(10.0, 10.0)
    check_window(None, 5.0)
    check_window(5.0, None)
    with pytest.raises(UnitError, match=r"until: 5.000 is before since 10.000"):
        check_window(10.0, 5.0)


@pytest.mark.parametrize("text", ["9" * 400 + "TB", "99999999999999999999TB", 2**63])
def test_sizes_past_int64_are_too_large(text: str | int) -> None:
    """A number of hundreds of digits used to escape as OverflowError (int(inf)), not a UnitError."""
    with pytest.raises(UnitError, match="storage_limit: .* is too large; at most 9223372036854775807 bytes"):
        parse_size(text, "storage_limit")
