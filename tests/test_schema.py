"""How rule values read to a person: the text in messages and enrichments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tollgate.rules.fields import format_value

PLUS_ONE = dt.timezone(dt.timedelta(hours=1))


@pytest.mark.parametrize(("value", "text"), [
    (None, "(none)"),
    (True, "true"),
    (False, "false"),
    ("P-100", "P-100"),
    (Decimal("150.00"), "150.00"),
    (Decimal("1E+3"), "1000"),
    (dt.datetime(2026, 11, 3, tzinfo=dt.UTC), "2026-11-03"),
    (dt.datetime(2026, 11, 3, 17, 30, tzinfo=dt.UTC), "2026-11-03T17:30:00+00:00"),
    (("OT", "DT"), "OT, DT"),
    ((), "(none)"),  # an empty list reads as a missing value does, e.g. in "unknown ids: (none)"
])
def test_format_value(value: object, text: str) -> None:
    assert format_value(value) == text


def test_equal_instants_in_different_offsets_print_their_own_time() -> None:
    midnight_utc = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    one_am_plus_one = dt.datetime(2026, 11, 3, 1, tzinfo=PLUS_ONE)
    assert midnight_utc == one_am_plus_one  # the same instant: a cache keyed on the value alone would mix them
    assert format_value(midnight_utc) == "2026-11-03"
    assert format_value(one_am_plus_one) == "2026-11-03T01:00:00+01:00"
    assert format_value(midnight_utc) == "2026-11-03"
