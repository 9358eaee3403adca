"""Fuzz sedsl: every input must compile (and then cost and lower to source) or raise a SpecError
with a valid span; never another exception, never past the per-input time budget.

Inputs come from two generators, each a function of a seed: random sentences of the grammar
itself (a walk of grammars/sedsl.lark's rules, with a vocabulary of sedsl's own names and numbers
so that some of them elaborate), and the shipped specs mutated (spans deleted, duplicated or
swapped, tokens, hostile values and random characters inserted).

    python bench/fuzz.py --n 100000 [--seed 0] [--budget 5] [--jobs 2]
    python bench/fuzz.py --scaling

prints the number of inputs, each outcome, and every crash and hang with its input; --scaling
prints the CPU time per node of networks of 10^3 to 10^5 nodes (compile time is linear in the
graph's size, which is what makes the node limit a time limit).
tests/test_fuzz.py runs a short seeded campaign of the same checks.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import re
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark

import sedsl
from sedsl import limits
from sedsl.errors import Span, SpecError
from sedsl.ir.ops import OPS
from sedsl.language.paths import GRAMMAR

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
SEEDS = sorted([*SPECS.glob("*.se"), *(ROOT / "tests" / "errors").glob("*.se")])
# Each input runs under these (a fuzzed spec may legitimately be large; its size is not the
# point, its handling is): a 1e6-node spec takes minutes, which the node limit already bounds.
FUZZ_LIMITS = {"nodes": 5_000, "repeat": 1_000}

# --- generators -------------------------------------------------------------------------------
# Plain functions of a random.Random, so that a seed names an input and a campaign runs at the
# speed of the compiler (hypothesis' engine took 70% of the time per input).

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


def _random_token(rnd: random.Random, pool: list[str], alphabet: str, first: str) -> str:
    """Mostly sedsl's own words and numbers (so that some inputs elaborate), sometimes new."""
    if rnd.random() < 0.8:
        return rnd.choice(pool)
    word = rnd.choice(first) + "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(6)))
    return f'"{word}"' if pool is _STRINGS else word


_TERMINALS: dict[str, Callable[[random.Random], str]] = {
    "NAME": lambda r: _random_token(r, _NAMES, "abcxyz_019", "abcxyz_"),
    "NUMBER": lambda r: _random_token(r, _NUMBERS, "0123456789", "123456789"),
    "STRING": lambda r: _random_token(r, _STRINGS, "ab/.\\x00 \t", "ab/."),
    "SHAPE": lambda r: r.choice(_SHAPES) if r.random() < 0.8
    else "x".join(str(r.randrange(0, 300)) for _ in range(r.randrange(2, 5))),
    "COMPARE": lambda r: r.choice(["==", "!=", "<=", ">=", "<", ">"]),
    "DIV_OP": lambda r: r.choice(["//", "/", "%"]),
    "_NL": lambda r: r.choice(["\n", "\n", "\n\n", "\r\n  ", "\n  # note\n"]),
}


class GrammarWalk:
    """Random sentences of grammars/sedsl.lark: each rule expands to a random alternative; past
    `depth`, to the alternative closest to the leaves, so that every walk ends."""

    def __init__(self, depth: int = 10):
        grammar = Lark(GRAMMAR.read_text(), parser="lalr", lexer="basic")
        self.depth = depth
        self.rules: dict[str, list[list[Any]]] = {}
        for rule in grammar.rules:
            self.rules.setdefault(rule.origin.name, []).append(rule.expansion)
        self.literal = {t.name: t.pattern.value for t in grammar.terminals
                        if type(t.pattern).__name__ == "PatternStr"}
        unknown = {t.name for t in grammar.terminals} - set(self.literal) - set(_TERMINALS) \
            - set(grammar.ignore_tokens)
        assert not unknown, f"bench/fuzz.py has no generator for the terminals {unknown}"
        self.height = self._heights()

    def _heights(self) -> dict[str, int]:
        """Each rule's least expansion depth down to terminals (a fixed point)."""
        height: dict[str, int] = {}
        changed = True
        while changed:
            changed = False
            for name, alternatives in self.rules.items():
                best = min(1 + max((height.get(s.name, 10**9) if not s.is_term else 0
                                     for s in alt), default=0) for alt in alternatives)
                if best < height.get(name, 10**9):
                    height[name], changed = best, True
        return height

    def sentence(self, rnd: random.Random) -> str:
        out: list[str] = []
        stack: list[tuple[Any, int]] = [(_Start, 0)]
        while stack:
            symbol, level = stack.pop()
            if symbol is not _Start and symbol.is_term:
                out.append(self.literal[symbol.name] if symbol.name in self.literal
                           else _TERMINALS[symbol.name](rnd))
                continue
            alternatives = self.rules["start" if symbol is _Start else symbol.name]
            if level > self.depth:
                least = min(self._alt_height(a) for a in alternatives)
                alternatives = [a for a in alternatives if self._alt_height(a) == least]
                chosen = rnd.choice(alternatives)
            elif level < 4:  # near the root, longer alternatives: sentences worth parsing
                chosen = rnd.choices(alternatives, [1 + len(a) ** 2 for a in alternatives])[0]
            else:
                chosen = rnd.choice(alternatives)
            stack.extend((s, level + 1) for s in reversed(chosen))
        return " ".join(out) + "\n"

    def _alt_height(self, alt: list[Any]) -> int:
        return max((0 if s.is_term else self.height[s.name] for s in alt), default=0)


_Start = object()  # the walk's root: the grammar's `start` rule


def mutated(rnd: random.Random) -> tuple[str, str]:
    """A shipped spec (or an error-corpus spec), mutated one to four times."""
    path = rnd.choice(SEEDS)
    text = path.read_text()
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randint(0, len(text))
        j = rnd.randint(i, min(len(text), i + 40))
        how = rnd.choice(["delete", "duplicate", "insert", "insert", "number", "swap_lines",
                          "text"])
        if how == "delete":
            text = text[:i] + text[j:]
        elif how == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        elif how == "insert":
            text = text[:i] + rnd.choice(_HOSTILE) + text[i:]
        elif how == "text":
            noise = "".join(chr(rnd.choice([rnd.randrange(32, 127), rnd.randrange(0, 0x3000)]))
                            for _ in range(rnd.randrange(7)))
            text = text[:i] + noise + text[j:]
        elif how == "number":
            numbers = list(re.finditer(r"\b[0-9]+\b", text))
            if numbers:
                m = rnd.choice(numbers)
                text = text[:m.start()] + rnd.choice(_NUMBERS) + text[m.end():]
        else:
            lines = text.split("\n")
            a, b = rnd.randrange(len(lines)), rnd.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text, str(path)


@cache
def _walk() -> GrammarWalk:
    return GrammarWalk()


def generate(seed_value: int) -> tuple[str, str]:
    """Input number `seed_value`: half strings of the grammar (named as if they sat in specs/),
    half mutated specs."""
    rnd = random.Random(seed_value)
    if rnd.random() < 0.5:
        return _walk().sentence(rnd), str(SPECS / "fuzz.se")
    return mutated(rnd)


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
    """Run inputs seed_value * 10**6 + 0 .. n - 1 (the same inputs for the same seed)."""
    result = Campaign(budget)
    for k in range(n):
        result.run(*generate(seed_value * 10**6 + k))
        if progress is not None and (k + 1) % 2000 == 0:
            progress(result)
    return result


def _shard(job: tuple[int, int, float]) -> Campaign:
    n, seed_value, budget = job

    def progress(c: Campaign) -> None:
        print(f"  [seed {seed_value}] {sum(c.outcomes.values())} inputs, {dict(c.outcomes)}",
              file=sys.stderr, flush=True)

    return campaign(n, seed_value, budget, progress)


def campaigns(n: int, seed_value: int, budget: float, jobs: int) -> Campaign:
    """n inputs over `jobs` processes: shard k runs seed `seed_value * 1000 + k` (one process
    runs seed `seed_value` itself), and the outcomes add up."""
    if jobs == 1:
        return _shard((n, seed_value, budget))
    shards = [(n // jobs + (k < n % jobs), seed_value * 1000 + k, budget) for k in range(jobs)]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        parts = pool.map(_shard, shards, chunksize=1)
    total = Campaign(budget)
    for part in parts:
        total.outcomes.update(part.outcomes)
        total.failures += part.failures
        total.slowest = max(total.slowest, part.slowest)
    return total


def scaling() -> None:
    """CPU seconds of load, cost and source for chains of n layers (`bn relu` pairs), and of n
    residual blocks that each get an SE block (placing SE blocks is linear too)."""
    print("network                 nodes     load     cost   source   per node")
    for n in (1_000, 10_000, 100_000):
        _scale("bn relu", f"network n {{\n  input 3x8x8\n  {{ bn relu }} * {n // 2}\n}}\n", n)
    for n in (1_000, 10_000, 40_000):
        _scale("residual + SE", "block b(c) {\n  residual { conv(c, 3) bn relu }\n}\n"
               f"network n {{\n  input 8x8x8\n  s = b(8) * {n // 10}\n}}\n"
               "se {\n  ratio = 4\n  at residual.end\n}\n", n)


def _scale(label: str, text: str, n: int) -> None:
    with limits.raised(repeat=n, nodes=4 * n):
        t0 = time.process_time()
        net = sedsl.loads(text)
        t1 = time.process_time()
        net.cost()
        t2 = time.process_time()
        net.source()
        t3 = time.process_time()
    nodes = net.ir.number_of_nodes()
    print(f"{label:<16}{nodes:>12,} {t1 - t0:7.2f}s {t2 - t1:7.2f}s {t3 - t2:7.2f}s "
          f"{1e6 * (t3 - t0) / nodes:7.0f} us")


def _cpu() -> float:
    """CPU seconds of this process and of its finished children."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="inputs to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=5.0, help="CPU seconds per input")
    parser.add_argument("--jobs", type=int, default=1, help="processes (one per core)")
    parser.add_argument("--scaling", action="store_true", help="time per node, then exit")
    args = parser.parse_args()
    if args.scaling:
        scaling()
        return
    start, cpu = time.perf_counter(), _cpu()
    result = campaigns(args.n, args.seed, args.budget, args.jobs)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    peak = max(resource.getrusage(who).ru_maxrss
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    total = sum(result.outcomes.values())
    print(f"inputs {total}  (seed {args.seed}, {args.jobs} process(es), budget {args.budget} "
          f"CPU s per input, limits {FUZZ_LIMITS})")
    for outcome in ("compiled", "spec error", "crash", "hang"):
        print(f"  {outcome:<11} {result.outcomes[outcome]}")
    print(f"wall {elapsed:.0f} s, CPU {cpu:.0f} s, {total / cpu:.1f} inputs per CPU second, "
          f"slowest input {result.slowest:.2f} CPU s, peak RSS {peak:.0f} MiB")
    for kind, text, error in result.failures:
        print(f"\n{kind}: {error}\n{text!r}")
    sys.exit(1 if result.failures else 0)


if __name__ == "__main__":
    main()
