"""A short, seeded fuzzing campaign (bench/fuzz.py runs the long one): strings of the grammar and
mutated shipped specs either compile, cost and lower to valid Python source, or raise a SpecError
whose span points into the input; never another exception, never past the time budget.
A failure prints the (shrunk) input: add it to tests/errors/ once it is fixed."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from bench.fuzz import FUZZ_LIMITS, check, inputs, time_budget
from sedsl import limits

BUDGET_S = 5.0  # CPU seconds per input; bench/fuzz.py records the slowest
# 600 inputs: about a minute of CPU (seeded by derandomize: the same inputs every run)


@settings(max_examples=600, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(inputs())
def test_every_input_compiles_or_is_a_spec_error(case: tuple[str, str]) -> None:
    with time_budget(BUDGET_S, cpu=True), limits.raised(**FUZZ_LIMITS):
        assert check(*case) in ("compiled", "spec error")

