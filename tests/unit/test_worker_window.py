"""The worker's since/until (worker/api/app.py): epoch seconds or a duration ago, finite, in range,
and a window that starts no later than it ends; anything else a 400 naming the parameter."""

from __future__ import annotations

import time

import pytest

from worker.api.app import _window
from worker.api.asgi import HTTPError


def test_durations_and_epoch_seconds() -> None:
    since, until = _window({"since": "10m", "until": "9000000000"})
    assert until == 9e9 and abs(since - (time.time() - 600)) < 5
    assert _window({"since": "1700000000", "until": "1m"})[0] == 1.7e9
    assert _window({}) == (None, None)


@pytest.mark.parametrize(("params", "message"), [
    # these reached int(since * 1e9) in the pcap export: the request died mid-stream (the hub: 502)
    ({"until": "1e300"}, "until: '1e300' is not a time"),
    ({"since": "nan"}, "since: 'nan' is not a time"),
    ({"since": "inf"}, "since: 'inf' is not a time"),
    ({"since": "-5"}, "since: '-5' is not a time"),
    ({"since": "ten minutes"}, "since: 'ten minutes' is not a duration (at character 1); expected a number "
                               "with a unit: ms, s, m, h or d, e.g. 5m or 1h30m (or epoch seconds)"),
    ({"since": "1m", "until": "5m"}, "is before since"),
])
def test_bad_windows_are_400s_naming_the_parameter(params: dict[str, str], message: str) -> None:
    with pytest.raises(HTTPError) as error:
        _window(params)
    assert error.value.status_code == 400 and message in str(error.value.detail)
