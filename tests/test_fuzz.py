"""A short, seeded fuzzing campaign (bench/fuzz.py runs the long one): random sentences of the
grammar, mutated shipped specs and attacks (SE sections of overlapping rules with every setting
and variant, zero and huge shape components, `use` of symlink loops, escapes, devices, FIFOs and
non-UTF-8 files) either compile, cost and lower to valid Python source (and the size estimate
stays under the elaborator's count), or raise a SpecError whose span points into the input;
never another exception, never past the time budget. Then a sample of command lines: exit
status 0, 1 or 2, never 3 or a traceback; and builds Ctrl-C'd at random moments leave the old
build or the new one, whole. A failure prints the input: add it to tests/errors/ once fixed."""

from __future__ import annotations

import os
import random

import pytest

from bench.fuzz import campaign, cli_sample, file_attack, generate, se_attack, shape_attack

BUDGET_S = 5.0  # CPU seconds per input; bench/fuzz.py records the slowest
INPUTS = 3000  # about 25 s of CPU on the 2-core CI machine; seed 0: the same inputs every run
COMMANDS, INTERRUPTS = 16, 4  # about 15 s: each runs `python -m sedsl.cli` afresh


def _report(failures: list[tuple[str, str, str]]) -> None:
    for kind, text, error in failures[:3]:
        print(f"{kind}: {error}\n{text}\n")


def test_every_input_compiles_or_is_a_spec_error() -> None:
    result = campaign(INPUTS, seed_value=0, budget=BUDGET_S)
    assert sum(result.outcomes.values()) == INPUTS
    assert result.outcomes["compiled"] > INPUTS // 30  # the generators reach the back end too
    _report(result.failures)
    assert not result.failures, f"{len(result.failures)} inputs crashed or hung (printed above)"


def test_every_generator_is_in_the_campaign() -> None:
    """The attacks are a fifth of the inputs, each kind of them reached."""
    made = {type(generate(k)).__name__ for k in range(50)}
    assert made == {"Case"}
    rnd = random.Random(0)
    assert any("variant = " in str(se_attack(rnd).text) for _ in range(20))
    assert any("x0" in str(shape_attack(rnd).text) for _ in range(20))
    assert any(file_attack(rnd).text is None for _ in range(40))


@pytest.mark.skipif(os.name != "posix", reason="SIGINT, FIFOs")
def test_command_lines_exit_0_1_or_2() -> None:
    result = cli_sample(COMMANDS, seed_value=0, interrupts=INTERRUPTS)
    assert sum(result.outcomes.values()) == COMMANDS + INTERRUPTS
    _report(result.failures)
    assert not result.failures, f"{len(result.failures)} command lines failed (printed above)"
