"""`check_seconds` and `check_positive_seconds`: what a bus's or a plugin's time setting may be."""

from __future__ import annotations

import pytest

from eventbus_core import check_positive_seconds, check_seconds


@pytest.mark.parametrize("value", [0, 0.5, 3, 86_400.0])
def test_finite_seconds_of_zero_or_more_pass_as_floats(value: float) -> None:
    assert check_seconds("wait", value) == float(value)
    assert type(check_seconds("wait", value)) is float


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "wait must be a number of seconds, got True"),
        ("5", "wait must be a number of seconds, got '5'"),
        (None, "wait must be a number of seconds, got None"),
        (-1, "wait must be a finite number of seconds >= 0, got -1"),
        (float("nan"), "wait must be a finite number of seconds >= 0, got nan"),
        (float("inf"), "wait must be a finite number of seconds >= 0, got inf"),
        (10**400, "wait must be at most"),  # raised OverflowError (review 194)
        (1e12, "wait must be at most"),
    ],
)
def test_check_seconds_says_what_is_wrong(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="wait must be") as refused:
        check_seconds("wait", value)  # type: ignore[arg-type]
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, float("nan"), float("-inf")])
def test_a_wait_that_must_be_positive_gets_one_message(value: float) -> None:
    # -1 was told ">= 0", then 0 "more than 0" (trial 190).
    with pytest.raises(ValueError, match="poll must be") as refused:
        check_positive_seconds("poll", value)
    assert str(refused.value) == f"poll must be a finite number of seconds > 0, got {value!r}"


def test_a_positive_wait_passes_and_keeps_the_upper_bound() -> None:
    assert check_positive_seconds("poll", 0.25) == 0.25
    with pytest.raises(ValueError, match="poll must be at most"):
        check_positive_seconds("poll", 10**400)
