"""A short, seeded fuzzing campaign (bench/fuzz.py runs the long one): random sentences of the
grammar and mutated shipped specs either compile, cost and lower to valid Python source, or raise
a SpecError whose span points into the input; never another exception, never past the time
budget. A failure prints the input: add it to tests/errors/ once it is fixed."""

from __future__ import annotations

from bench.fuzz import campaign

BUDGET_S = 5.0  # CPU seconds per input; bench/fuzz.py records the slowest
INPUTS = 4000  # about 30 s of CPU on the 2-core CI machine; seed 0: the same inputs every run


def test_every_input_compiles_or_is_a_spec_error() -> None:
    result = campaign(INPUTS, seed_value=0, budget=BUDGET_S)
    assert sum(result.outcomes.values()) == INPUTS
    assert result.outcomes["compiled"] > INPUTS // 50  # the generators reach the back end too
    for kind, text, error in result.failures[:3]:
        print(f"{kind}: {error}\n{text!r}\n")
    assert not result.failures, f"{len(result.failures)} inputs crashed or hung (printed above)"
