"""Fuzz sedsl: every input must compile (and then cost and lower to source) or raise a SpecError
with a valid span; never another exception, never past the per-input time budget.

Inputs come from two generators: strings drawn from the grammar itself
(hypothesis.extra.lark.from_lark on grammars/sedsl.lark, with a vocabulary of sedsl's own names
and numbers so that some of them elaborate), and the shipped specs mutated (spans deleted,
duplicated or swapped, tokens and hostile values inserted).

    python bench/fuzz.py --n 100000 [--seed 0] [--budget 5]
    python bench/fuzz.py --scaling

prints the number of inputs, each outcome, and every crash and hang with its input; --scaling
prints the CPU time per node of networks of 10^3 to 10^5 nodes (compile time is linear in the
graph's size, which is what makes the node limit a time limit).
tests/test_fuzz.py runs a short seeded campaign of the same checks.
"""

from __future__ import annotations

import argparse
import re
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

import sedsl
from sedsl import limits
from sedsl.errors import Span, SpecError
from sedsl.ops import OPS
from sedsl.paths import GRAMMAR

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SEEDS = sorted([*SPECS.glob("*.se"), *(ROOT / "tests" / "errors").glob("*.se")])
# Each input runs under these (a fuzzed spec may legitimately be large; its size is not the
# point, its handling is): a 1e6-node spec takes minutes, which the node limit already bounds.
FUZZ_LIMITS = {"nodes": 5_000, "repeat": 1_000}

# --- generators -------------------------------------------------------------------------------

_NAMES = sorted({*OPS, "bottleneck", "basic", "stem7x7", "classifier", "inception", "x", "y",
                 "ratio", "c_in", "h_in", "w_in", "stride", "planes", "floor", "make_divisible",
                 "identity", "conv2", "conv5", "relu2", "block1", "n", "layout", "timm"})
_NUMBERS = ["0", "1", "2", "3", "7", "8", "16", "64", "0.5", "1e-5", "1e308", "1e-308",
            "99999999999999999999999", "1e99999999999999999999999", "100000", "1000000"]
_STRINGS = ['"lib/resnet.se"', '"lib/inception.se"', '"caffe"', '"timm"', '"avg"', '"max"',
            '"relu"', '""', '"/dev/zero"', '"../../etc/passwd"', '"lib"', '"a\x00b"']
_SHAPES = ["3x8x8", "3x32x32", "1x7", "7x1", "3x224x224", "0x0x0", "3x1x1", "3x99999999x9"]
_HOSTILE = ["{", "}", "(", ")", ",", "*", "\n", " ", "=", "..", ".", ";", "residual",
            "shortcut", "parallel concat", "if", "else", "then", "not", "block", "network",
            "use", "se", "at", "after", "in", "of", "\x00", "\ufeff", "\r", "\r\n", "\t", "#",
            "\\\n", "* 1000", "* 100000", "* 0", "* -1", "* 0.5", "input 3x8x8", "conv(",
            "bn", "relu", "identity", "(((((((((((", "- - - - - - - - - - - -",
            *_NUMBERS, *_STRINGS, *_SHAPES, *_NAMES]


def grammar_inputs() -> st.SearchStrategy[str]:
    """Strings of the grammar: every terminal drawn from sedsl's vocabulary or its regex."""
    grammar = Lark(GRAMMAR.read_text(), parser="lalr", lexer="basic")  # uncached: from_lark
    explicit: dict[str, st.SearchStrategy[str]] = {}                   # reads its rules
    for term in grammar.terminals:
        if term.name.startswith("__") or term.name == "_NL":
            continue
        value = term.pattern.value
        pool = {"NAME": _NAMES, "NUMBER": _NUMBERS, "STRING": _STRINGS, "SHAPE": _SHAPES}
        if term.name in pool:
            strategy = st.sampled_from(pool[term.name]) | st.from_regex(value, fullmatch=True)
        elif type(term.pattern).__name__ == "PatternStr":
            strategy = st.just(value)
        else:
            strategy = st.from_regex(value, fullmatch=True)
        explicit[term.name] = strategy.map(lambda s: s + " ")  # tokens apart, as written
    return from_lark(grammar, explicit=explicit)


@st.composite
def mutated_inputs(draw: st.DrawFn) -> tuple[str, str]:
    """A shipped spec (or an error-corpus spec), mutated one to four times."""
    path = draw(st.sampled_from(SEEDS))
    text = path.read_text()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        how = draw(st.sampled_from(["delete", "duplicate", "insert", "insert", "number",
                                    "swap_lines", "text"]))
        if how == "delete":
            text = text[:i] + text[j:]
        elif how == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif how == "insert":
            text = text[:i] + draw(st.sampled_from(_HOSTILE)) + text[i:]
        elif how == "text":
            text = text[:i] + draw(st.text(max_size=6)) + text[j:]
        elif how == "number":
            numbers = list(re.finditer(r"\b[0-9]+\b", text))
            if numbers:
                m = draw(st.sampled_from(numbers))
                text = text[:m.start()] + draw(st.sampled_from(_NUMBERS)) + text[m.end():]
        else:
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text, str(path)


def inputs() -> st.SearchStrategy[tuple[str, str]]:
    """Both generators, half and half; a grammar input is named as if it sat in specs/."""
    return grammar_inputs().map(lambda t: (t, str(SPECS / "fuzz.se"))) | mutated_inputs()


# --- the check --------------------------------------------------------------------------------


class Hang(Exception):
    """An input ran past its time budget."""


@contextmanager
def time_budget(seconds: float, cpu: bool = False) -> Iterator[None]:
    """Raise Hang in the main thread once `seconds` have passed: of wall time, or of this
    process's CPU time (`cpu`, which a loaded machine does not stretch). The alarm repeats every
    0.1 s, in case Python swallows the first one (it does, in a gc callback)."""
    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"over {seconds} s{' of CPU' if cpu else ''}")

    which, timer = ((signal.SIGPROF, signal.ITIMER_PROF) if cpu
                    else (signal.SIGALRM, signal.ITIMER_REAL))
    previous = signal.signal(which, expire)
    signal.setitimer(timer, seconds, 0.1)
    try:
        yield
    finally:
        signal.setitimer(timer, 0)
        signal.signal(which, previous)


def valid_span(span: Span | None, text: str, path: str) -> bool:
    """The span points into the input, or into a file it `use`s, inside its text."""
    if span is None:
        return False
    if span.file == path:
        source = text
    else:
        target = Path(span.file) if Path(span.file).is_absolute() else Path.cwd() / span.file
        if not target.is_file():
            return False
        source = target.read_text()
    lines = source.split("\n")
    if not 1 <= span.line <= len(lines) + 1 or span.col < 1:
        return False
    width = len(lines[span.line - 1]) if span.line <= len(lines) else 0
    return span.col <= width + 2 and (span.end_line, span.end_col) >= (span.line, span.col)


def check(text: str, path: str) -> str:
    """`compiled` or `spec error`; raises AssertionError (or anything) for a crash."""
    try:
        net = sedsl.loads(text, path=path)
    except SpecError as e:
        assert valid_span(e.span, text, path), f"SpecError with a bad span {e.span}: {e}"
        return "spec error"
    net.cost()
    for fused in (False, True):
        compile(net.source(fused=fused), "<model.py>", "exec")  # valid Python, at least
    return "compiled"


@dataclass
class Campaign:
    budget: float
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # kind, input, error
    slowest: float = 0.0

    def run(self, text: str, path: str) -> None:
        start = time.process_time()
        try:
            with time_budget(self.budget, cpu=True), limits.raised(**FUZZ_LIMITS):
                outcome = check(text, path)
        except Hang:
            outcome = "hang"
        except Exception as e:
            outcome = "crash"
            self.failures.append(("crash", text, f"{type(e).__name__}: {e}"[:500]))
        took = time.process_time() - start
        if took > self.budget and outcome != "hang":  # the alarm was swallowed: still a hang
            outcome = "hang"
        if outcome == "hang":
            self.failures.append(("hang", text, f"{took:.1f} s of CPU"))
        self.slowest = max(self.slowest, took)
        self.outcomes[outcome] += 1


def campaign(n: int, seed_value: int, budget: float,
             progress: Callable[[Campaign], None] | None = None) -> Campaign:
    """Run n generated inputs (deterministic for a seed)."""
    result = Campaign(budget)

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(inputs())
    def one(case: tuple[str, str]) -> None:
        result.run(*case)
        if progress is not None and sum(result.outcomes.values()) % 500 == 0:
            progress(result)

    one()
    return result


def scaling() -> None:
    """CPU seconds of load, cost and source for chains of n layers (`bn * n` in blocks)."""
    print("nodes     load     cost   source   per node")
    for n in (1_000, 10_000, 100_000):
        text = f"network n {{\n  input 3x8x8\n  {{ bn relu }} * {n // 2}\n}}\n"
        with limits.raised(repeat=n):
            t0 = time.process_time()
            net = sedsl.loads(text)
            t1 = time.process_time()
            net.cost()
            t2 = time.process_time()
            net.source()
            t3 = time.process_time()
        nodes = net.graph.number_of_nodes()
        print(f"{nodes:>7,} {t1 - t0:7.2f}s {t2 - t1:7.2f}s {t3 - t2:7.2f}s "
              f"{1e6 * (t3 - t0) / nodes:7.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="inputs to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=5.0, help="CPU seconds per input")
    parser.add_argument("--scaling", action="store_true", help="time per node, then exit")
    args = parser.parse_args()
    if args.scaling:
        scaling()
        return
    start, cpu = time.perf_counter(), time.process_time()

    def progress(c: Campaign) -> None:
        print(f"  {sum(c.outcomes.values())} inputs, {dict(c.outcomes)}", file=sys.stderr)

    result = campaign(args.n, args.seed, args.budget, progress)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(result.outcomes.values())
    print(f"inputs {total}  (seed {args.seed}, budget {args.budget} CPU s per input, limits "
          f"{FUZZ_LIMITS})")
    for outcome in ("compiled", "spec error", "crash", "hang"):
        print(f"  {outcome:<11} {result.outcomes[outcome]}")
    print(f"wall {elapsed:.0f} s, CPU {cpu:.0f} s, {total / cpu:.1f} inputs per CPU second, "
          f"slowest input {result.slowest:.2f} CPU s, peak RSS {peak:.0f} MiB")
    for kind, text, error in result.failures:
        print(f"\n{kind}: {error}\n{text!r}")
    sys.exit(1 if result.failures else 0)


if __name__ == "__main__":
    main()
