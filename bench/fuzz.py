"""Fuzz sedsl: every input must compile (and then cost and lower to source) or raise a SpecError
with a valid span; never another exception, never past the per-input time budget. Every input
that compiles also checks the size estimate: it never counts more than the elaborator does.

Inputs come from generators, each a function of a seed: random sentences of the grammar itself
(a walk of grammars/sedsl.lark's rules, with a vocabulary of sedsl's own names and numbers so
that some of them elaborate); the shipped specs mutated (spans deleted, duplicated or swapped,
tokens, hostile values, random characters and lone surrogates inserted, sometimes with
overrides as `--set` gives them); and attacks: SE sections of overlapping rules with every
setting and variant, op calls with zero and huge shape components, and files: `use` of symlink
loops and escapes, devices, FIFOs, folders, non-UTF-8 and CR-only files, specs that are such
files themselves (a fixture folder made once per process).

    python bench/fuzz.py --n 100000 [--seed 0] [--budget 5] [--jobs 2] [--cli 300]
    python bench/fuzz.py --scaling

prints the number of inputs, each outcome, and every crash and hang with its input; `--cli N`
then runs N command lines (`python -m sedsl.cli` on generated specs and options: exit status
0, 1 or 2, never 3 or a traceback) and Ctrl-C's builds at random moments (the build folder is
the old build or the new one, whole); --scaling prints the CPU time per node of networks of
10^3 to 10^5 nodes (compile time is linear in the graph's size, which is what makes the node
limit a time limit). tests/test_fuzz.py runs a short seeded campaign of the same checks.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
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
from typing import Any, NamedTuple

from lark import Lark

import sedsl
from sedsl import files, limits
from sedsl.errors import NOWHERE, Span, SpecError
from sedsl.ir.ops import OPS
from sedsl.ir.se import VARIANTS
from sedsl.language import source
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
_SHAPES = ["3x8x8", "3x32x32", "1x7", "7x1", "3x224x224", "0x0x0", "3x1x1", "3x99999999x9",
           "3x0", "0x3", "1x0", "0x0", "999999999999999x1", "1x99999999999999", "2x2x2"]
_HOSTILE = ["{", "}", "(", ")", ",", "*", "\n", " ", "=", "..", ".", ";", "residual",
            "shortcut", "parallel concat", "if", "else", "then", "not", "block", "network",
            "use", "se", "at", "after", "in", "of", "\x00", "\ufeff", "\r", "\r\n", "\t", "#",
            "\\\n", "* 1000", "* 100000", "* 0", "* -1", "* 0.5", "input 3x8x8", "conv(",
            "bn", "relu", "identity", "(((((((((((", "- - - - - - - - - - - -",
            ":", "|", ': "a" | "b"', "\r", "\ud800", "\udcff", "\ufffd",
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


class Case(NamedTuple):
    """One input: spec text (str, or bytes to be read from a file; None: load `path` itself),
    the path it is named by, and overrides as `--set` gives them."""

    text: str | bytes | None
    path: str
    overrides: tuple[tuple[str, str], ...] = ()


# Overrides as `--set NAME=VALUE` passes them: good, bad, misspelt, outside declared values.
_OVERRIDES = [("classes", "10"), ("classes", "0"), ("classes", "ten"), ("classes", "1e99"),
              ("clases", "10"), ("size", "b3"), ("size", "b9"), ("size", "B3"), ("size", ""),
              ("layout", "timm"), ("layout", "tim"), ("layot", "timm"), ("ratio", "8"),
              ("ratio", "0"), ("ratio", "1e-15"), ("squeeze", "median"), ("variant", "eca"),
              ("where", "pre"), ("where", "nowhere"), ("act", "relu6"), ("act", "conv"),
              ("width", "\udcff"), ("kernel", "4"), ("init", "identity")]


def mutated(rnd: random.Random) -> Case:
    """A shipped spec (or an error-corpus spec), mutated one to four times; sometimes with
    overrides."""
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
            noise = "".join(chr(rnd.choice([rnd.randrange(32, 127), rnd.randrange(0, 0x3000),
                                            rnd.randrange(0xD800, 0xE000)]))
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
    overrides = tuple(rnd.sample(_OVERRIDES, rnd.randint(1, 2))) if rnd.random() < 0.2 else ()
    return Case(text, str(path), overrides)


# --- attacks: SE sections, shapes, files ------------------------------------------------------

_UNIT = """block unit(c, stride = 1) {
  residual {
    conv(c, 1) bn relu
    conv(c, 3, stride = stride) bn relu
    conv(4 * c, 1) bn
  } shortcut {
    if stride != 1 or c_in != 4 * c { conv(4 * c, 1, stride = stride) bn }
  }
  relu
}

block split(c) {
  parallel concat {
    b1 = conv(c, 1) bn relu
    b2 = { conv(c, 3) bn relu } * 2
  }
}

block outer(c) {
  a = unit(c)
  b = split(c)
}
"""
_NETWORK = """network attack(classes = 10) {
  input 8x16x16
  stem = { conv(16, 3) bn relu }
  s1 = unit(4) * 2
  s2 = unit(8, stride = 2) * 2
  s3 = outer(8)
  head = { global_avgpool flatten; fc = linear(classes) }
}
"""
# Points with the scopes that have them (mostly), and a few that match nothing.
_RULES = {"at residual.end": ["", " in s1", " in s1..s2", " of unit", " in s2.block1..block2"],
          "at residual.start": ["", " in s2", " of unit", " in s1.block2"],
          "at block.end": ["", " in s1", " in s3", " of outer", " of split", " in s3.a"],
          "at block.start": ["", " in s2", " of unit", " in s3"],
          "at shortcut.end": [" in s1", " in s2", " of unit"],
          "at b1.end": [" of split", " in s3"], "at b2.start": [" of split", " in s3.b"],
          "at standard": [""], "at pre": [" in s1"], "at post": ["", " of unit"],
          "at identity": [" in s2"], "after relu1": [" of unit", " in s1"],
          "after relu2": [" in s2"], "after b1.relu1": [" of split"],
          "after a.relu1": [" of outer"]}
_BAD_RULES = ["at nowhere.end", "at residual", "at b1.end in head", "after relu1 of nothing",
              "at block.end in head", "at residual.end in s1.block3"]
_VALUES: dict[str, list[str]] = {
    "variant": ["se", *sorted(VARIANTS)], "ratio": ["1", "4", "16", "0.5", "2.5"],
    "width": ["1", "3", "7"], "round": ["floor", "ceil", "8", "3"],
    "round_limit": ["0", "0.9"], "base": ["channels", "block_in"],
    "squeeze": ["avg", "max", "avgmax", "std", "l2"],
    "excite": ["relu", "silu", "hardswish", "gelu", "sigmoid"],
    "gate": ["sigmoid", "hardsigmoid", "tanh", "relu"], "bias": ["true", "false"],
    "kernel": ["auto", "3", "5"], "gamma": ["2", "0.5"], "beta": ["1", "-1", "0"],
    "spatial_kernel": ["7", "3", "1"], "gather": ["mean", "conv"], "mlp": ["true", "false"],
    "init": ["default", "default", "default", "identity"],
    "enabled": ["true", "false", "classes > 5"],
}
_BAD_VALUES: dict[str, list[str]] = {
    "variant": ["nope", "1"], "ratio": ["1000", "0", "1e-15", "-2"], "width": ["0", "100000"],
    "round": ["0", "median"], "round_limit": ["1", "-1"], "base": ["nope"],
    "squeeze": ["median"], "excite": ["conv"], "gate": ["silu"], "bias": ["1"],
    "kernel": ["4", "0", "99999"], "gamma": ["0"], "beta": ["x"], "spatial_kernel": ["4", "99"],
    "gather": ["max"], "mlp": ["2"], "init": ["zero"], "enabled": ["classes"],
}


def se_attack(rnd: random.Random) -> Case:
    """Residual, parallel and nested blocks under two to five SE rules at overlapping points,
    with random settings of every kind (the variants and their own settings too); mostly
    values a setting takes, sometimes not."""
    def settings(k: int) -> str:
        names = rnd.sample(sorted(_VALUES), k)
        pools = [_VALUES[n] if rnd.random() < 0.93 else _BAD_VALUES[n] for n in names]
        return ", ".join(f"{n} = {rnd.choice(pool)}" for n, pool in zip(names, pools,
                                                                      strict=True))

    rules = []
    points = sorted(_RULES)
    for _ in range(rnd.randint(2, 5)):
        point = rnd.choice(points)
        rule = point + rnd.choice(_RULES[point]) if rnd.random() < 0.97 else \
            rnd.choice(_BAD_RULES)
        if rnd.random() < 0.8:
            rule += " { " + settings(rnd.randint(1, 4)) + " }"
        rules.append(rule)
    top = "\n  ".join(f"ratio = 2\n  {settings(rnd.randint(0, 3))}".split(", "))
    text = f"{_UNIT}\n{_NETWORK}\nse {{\n  {top}\n  " + "\n  ".join(rules) + "\n}\n"
    return Case(text, str(SPECS / "fuzz.se"))


_SHAPE_ARGS = {"conv": ["kernel", "stride", "padding", "dilation"],
               "maxpool": ["kernel", "stride", "padding"],
               "avgpool": ["kernel", "stride", "padding"],
               "adaptive_avgpool": ["size"]}
_PARTS = ["0", "1", "2", "3", "7", "99999999999999", "999999999999999", "1000000000000000"]


def shape_attack(rnd: random.Random) -> Case:
    """Op calls whose shape-valued arguments have zero and huge parts (`stride = 3x0`)."""
    calls = []
    for _ in range(rnd.randint(1, 3)):
        op = rnd.choice(sorted(_SHAPE_ARGS))
        args = ["8"] if op == "conv" else []
        for name in rnd.sample(_SHAPE_ARGS[op], rnd.randint(1, len(_SHAPE_ARGS[op]))):
            value = "x".join(rnd.choice(_PARTS) for _ in range(rnd.choice([1, 2, 2, 2, 3])))
            args.append(f"{name} = {value}")
        if op == "conv" and not any(a.startswith("kernel") for a in args):
            args.append("kernel = 3")
        if op != "conv" and not any(a.startswith(("kernel", "size")) for a in args):
            args.insert(0, "3")
        calls.append(f"{op}({', '.join(args)})")
    size = rnd.choice(["3x16x16", "3x1x1", "3x99999999999999x1"])
    text = f"network shapes {{\n  input {size}\n  " + "\n  ".join(calls) + \
        "\n  global_avgpool flatten linear(2)\n}\n"
    return Case(text, str(SPECS / "fuzz.se"))


@cache
def fixtures() -> Path:
    """A folder of hostile files, made once per process (removed when it exits)."""
    import atexit
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="sedsl-fuzz-"))
    atexit.register(shutil.rmtree, root, True)
    (root / "good.se").write_text("block lib_b(c = 8) { conv(c, 3) bn relu }\n")
    (root / "spec.se").write_text("network other {\n  input 3x8x8\n  bn\n}\n")
    (root / "loop_a.se").symlink_to("loop_b.se")
    (root / "loop_b.se").symlink_to("loop_a.se")
    (root / "self.se").symlink_to("self.se")
    (root / "escape.se").symlink_to("/etc/hostname")
    (root / "root").symlink_to("/")
    (root / "zero.se").symlink_to("/dev/zero")
    (root / "null.se").symlink_to("/dev/null")
    (root / "dangling.se").symlink_to("nowhere.se")
    os.mkfifo(root / "fifo.se")
    (root / "folder.se").mkdir()
    (root / "latin1.se").write_bytes("block caf\xe9 { bn }\n".encode("latin-1"))
    (root / "cr.se").write_bytes(b"# old Mac\rblock lib_cr { bn relu }\r")
    (root / "nul.se").write_bytes(b"block lib_nul { bn }\n\0\n")
    (root / "bom.se").write_bytes(b"\xef\xbb\xbfblock lib_bom { bn }\r\n")
    (root / "sub").mkdir()
    (root / "sub" / "up.se").write_text('use "../good.se"\nblock lib_up { lib_b }\n')
    (root / "sub" / "out.se").write_text('use "../../x.se"\n')
    for i in range(40):  # a chain of `use` past the limit of 32
        (root / f"chain{i}.se").write_text(f'use "chain{i + 1}.se"\n' if i < 39
                                            else "block lib_end { bn }\n")
    return root


_FIXTURES = ["good.se", "spec.se", "loop_a.se", "self.se", "escape.se", "root/etc/passwd",
             "zero.se", "null.se", "dangling.se", "fifo.se", "folder.se", "latin1.se", "cr.se",
             "nul.se", "bom.se", "sub/up.se", "sub/out.se", "chain0.se", "../x.se",
             "/etc/passwd", "lib/resnet.se", "sub", "good.se\udcff", "good.se/x.se"]
_BLOCKS = ["lib_b", "lib_b(16)", "lib_cr", "lib_nul", "lib_bom", "lib_up", "lib_end", "bn"]


def file_attack(rnd: random.Random) -> Case:
    """`use` of hostile files; a spec that is one itself; spec bytes that are not UTF-8."""
    root = fixtures()
    how = rnd.random()
    if how < 0.15:  # the spec is the hostile file
        return Case(None, str(root / rnd.choice(_FIXTURES)))
    if how < 0.3:  # spec bytes: invalid UTF-8, CR-only line ends, a BOM, NUL bytes
        body = b"network bytes {\n  input 3x8x8\n  bn relu\n}\n"
        i = rnd.randrange(len(body))
        junk = rnd.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\0", b"\xef\xbb\xbf", b"\r"])
        data = body[:i] + junk + body[i:]
        if rnd.random() < 0.3:
            data = data.replace(b"\n", b"\r")
        return Case(data, str(root / "fuzz.se"))
    uses = "".join(f'use "{rnd.choice(_FIXTURES)}"\n' for _ in range(rnd.randint(1, 3)))
    body = " ".join(rnd.choice(_BLOCKS) for _ in range(rnd.randint(1, 3)))
    text = f"{uses}network files {{\n  input 8x8x8\n  {body}\n}}\n"
    return Case(text, str(root / "fuzz.se"))


@cache
def _walk() -> GrammarWalk:
    return GrammarWalk()


def generate(seed_value: int) -> Case:
    """Input number `seed_value`: 40% strings of the grammar (named as if they sat in specs/),
    40% mutated specs, 20% attacks (SE sections, shape arguments, files)."""
    rnd = random.Random(seed_value)
    pick = rnd.random()
    if pick < 0.4:
        return Case(_walk().sentence(rnd), str(SPECS / "fuzz.se"))
    if pick < 0.8:
        return mutated(rnd)
    if pick < 0.9:
        return se_attack(rnd)
    if pick < 0.95:
        return shape_attack(rnd)
    return file_attack(rnd)


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


def valid_span(span: Span | None, case: Case) -> bool:
    """The span points into the input, or into a file it `use`s, inside its text (line ends
    as sedsl reads them); an override's error may point at the command line."""
    if span is None:
        return case.text is None  # the spec file itself cannot be read: nothing to point into
    if span.file == NOWHERE.file:
        return bool(case.overrides)
    if span.file == case.path and isinstance(case.text, str):
        text = case.text
    else:
        target = Path(span.file) if Path(span.file).is_absolute() else Path.cwd() / span.file
        if not files.is_file(target):
            return False
        text = target.read_bytes().decode("utf-8-sig", errors="replace")
    lines = source.line_ends(text).split("\n")
    if not 1 <= span.line <= len(lines) + 1 or span.col < 1:
        return False
    width = len(lines[span.line - 1]) if span.line <= len(lines) else 0
    return span.col <= width + 2 and (span.end_line, span.end_col) >= (span.line, span.col)


def check(case: Case) -> str:
    """`compiled` or `spec error`; raises AssertionError (or anything) for a crash."""
    text, path, overrides = case
    try:
        if text is None:
            net = sedsl.load(path, **dict(overrides))
        elif isinstance(text, bytes):
            written = Path(path).with_name(f"bytes-{os.getpid()}.se")
            written.write_bytes(text)
            case = Case(None, str(written))
            net = sedsl.load(written)
        else:
            net = sedsl.loads(text, path=path, **dict(overrides))
    except SpecError as e:
        assert valid_span(e.span, case), f"SpecError with a bad span {e.span}: {e}"
        return "spec error"
    net.cost()
    for fused in (False, True):
        compile(net.source(fused=fused), "<model.py>", "exec")  # valid Python, at least
    if isinstance(text, str):
        steps, least = elaborated_steps(text, path, dict(overrides))
        assert least <= steps, f"the size estimate {least} is above the elaborator's {steps}"
    return "compiled"


def elaborated_steps(text: str, path: str, overrides: dict[str, str]) -> tuple[int, int]:
    """(what the elaborator counts against the node limit, the estimate of it) for a spec
    that compiles."""
    from sedsl.compile import estimate
    from sedsl.compile.elaborate import Elaborator, elaborate
    from sedsl.language.evaluate import to_value
    from sedsl.language.library import load_library, search_path
    from sedsl.language.parse import parse

    module = parse(text, path)
    library = load_library(module, search_path(path, None), {path: text})
    made: list[Elaborator] = []

    def elaborator(lib: Any) -> Elaborator:
        made.append(Elaborator(lib))
        return made[-1]

    values = {k: to_value(v, k) for k, v in overrides.items()}
    elaborate(module, library, values, None, elaborator)
    net = module.networks[0]
    params = {p.name for p in net.params}
    env = made[0].evaluator.parameters(net, {k: v for k, v in values.items() if k in params})
    bound = estimate.least(net, env, made[0].evaluator)
    return made[0].budget.steps, 0 if bound is None else bound.nodes


@dataclass
class Campaign:
    budget: float
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # kind, input, error
    slowest: float = 0.0
    slowest_input: str = ""

    def run(self, case: Case) -> None:
        start = time.process_time()
        try:
            with time_budget(self.budget, cpu=True), limits.raised(**FUZZ_LIMITS):
                outcome = check(case)
        except Hang:
            outcome = "hang"
        except Exception as e:
            outcome = "crash"
            self.failures.append(("crash", repr(case), f"{type(e).__name__}: {e}"[:500]))
        took = time.process_time() - start
        if took > self.budget and outcome != "hang":  # the alarm was swallowed: still a hang
            outcome = "hang"
        if outcome == "hang":
            self.failures.append(("hang", repr(case), f"{took:.1f} s of CPU"))
        if took > self.slowest:
            self.slowest, self.slowest_input = took, repr(case)[:300]
        self.outcomes[outcome] += 1


def campaign(n: int, seed_value: int, budget: float,
             progress: Callable[[Campaign], None] | None = None) -> Campaign:
    """Run inputs seed_value * 10**6 + 0 .. n - 1 (the same inputs for the same seed)."""
    result = Campaign(budget)
    for k in range(n):
        result.run(generate(seed_value * 10**6 + k))
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
        if part.slowest > total.slowest:
            total.slowest, total.slowest_input = part.slowest, part.slowest_input
    return total


# --- the command line -------------------------------------------------------------------------

TINY = ("network tiny(classes = 10) {\n  input 3x16x16\n  conv(8, 3) bn relu\n"
        "  global_avgpool flatten linear(classes)\n}\n")
_COMMANDS = [["check"], ["check"], ["cost"], ["cost", "--json"], ["cost", "--by", "layer"],
             ["cost", "--by", "nope"], ["cost", "--ratio", ","], ["cost", "--ratio", "2,4"],
             ["cost", "--ratio", "0"], ["cost", "--sweep", "ratio"], ["cost", "--batch", "x"],
             ["graph"], ["graph", "--format", "dot"], ["graph", "--format", "svg", "-o", "OUT"],
             ["graph", "--format", "png"], ["graph", "--format", "nope"], ["graph", "-o", "OUT"],
             ["graph", "--after", "nope"], ["graph", "--depth", "0", "--format", "svg"],
             ["build", "-o", "OUT"], ["build", "--no-se", "-o", "OUT"], ["fmt"],
             ["fmt", "--check"], ["fmt", "--check", "--write"]]
_OPTIONS = [[], [], ["--set", "classes=7"], ["--set", "ratio"], ["--set", "clases=3"],
            ["--set", "classes=ten"], ["--set", "classes=1e999"], ["--set", "size=b9"],
            ["--set", "layout=tim"], ["--set", "=3"], ["--input", "abc"], ["--input", "0"],
            ["--input", "16"], ["--no-such-option"], ["--set", "ratio=8"]]
_OUTPUTS = ["new/dir/out.x", "file", "file/below", "folder", "[/x]/out", "out\udcff"]


def cli_sample(n: int, seed_value: int, interrupts: int) -> CliCampaign:
    """`n` command lines on generated specs and options: each exits 0, 1 or 2, never 3 (a bug)
    nor with a traceback, within a minute; then `interrupts` builds Ctrl-C'd at random moments:
    the build folder is the earlier build or the new one, whole, with nothing left beside it."""
    import tempfile

    result = CliCampaign(60.0)
    rnd = random.Random(seed_value)
    with tempfile.TemporaryDirectory(prefix="sedsl-cli-") as tmp:
        work = Path(tmp)
        (work / "file").write_text("precious")
        (work / "folder").mkdir()
        (work / "folder" / "notes.txt").write_text("precious")
        (work / "tiny.se").write_text(TINY)
        for k in range(n):
            case = generate(seed_value * 10**6 + k)
            spec = work / f"spec{k}.se"
            if isinstance(case.text, str):
                spec.write_bytes(case.text.encode("utf-8", "surrogatepass"))
            elif isinstance(case.text, bytes):
                spec.write_bytes(case.text)
            else:
                spec = Path(case.path)
            if rnd.random() < 0.2:
                spec = rnd.choice([work / "tiny.se", SPECS / "se_digits.se", work / "missing.se",
                                   work / "folder", Path("/dev/zero")])
            output = str(work / rnd.choice(_OUTPUTS))
            args = [output if a == "OUT" else a for a in rnd.choice(_COMMANDS)]
            args = [args[0], str(spec), *args[1:], *rnd.choice(_OPTIONS)]
            result.run_command(args, work)
        for k in range(interrupts):
            result.interrupt_build(work, k, rnd.uniform(0.0, 0.6))  # a build takes ~0.5 s
    return result


def _command(args: list[str], cwd: Path) -> Any:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.Popen([sys.executable, "-m", "sedsl.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class CliCampaign(Campaign):
    """Outcomes of command lines: `exit N`, `Ctrl-C: exit N`, crash (status 3 or another
    outside 0..2, a traceback, a build folder left broken), hang (past `budget` seconds)."""

    def run_command(self, args: list[str], cwd: Path) -> None:
        start = time.perf_counter()
        proc = _command(args, cwd)
        try:
            errors = proc.communicate(timeout=self.budget)[1].decode(errors="replace")
        except Exception:
            proc.kill()
            proc.communicate()
            self.failures.append(("hang", repr(args), f"over {self.budget} s"))
            self.outcomes["hang"] += 1
            return
        took = time.perf_counter() - start
        if took > self.slowest:
            self.slowest, self.slowest_input = took, repr(args)[:300]
        if proc.returncode not in (0, 1, 2) or "Traceback" in errors:
            self.failures.append(("crash", repr(args), f"exit {proc.returncode}: {errors[-800:]}"))
            self.outcomes["crash"] += 1
        else:
            self.outcomes[f"exit {proc.returncode}"] += 1

    def interrupt_build(self, work: Path, k: int, delay: float) -> None:
        """A build over an earlier one, Ctrl-C'd after `delay` seconds."""
        import json
        import signal

        parent = work / f"builds{k}"
        target = parent / "out"
        tiny = str(work / "tiny.se")
        first = _command(["build", tiny, "-o", str(target)], work)
        first.communicate(timeout=self.budget)
        proc = _command(["build", tiny, "-o", str(target), "--set", "classes=7"], work)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        errors = proc.communicate(timeout=self.budget)[1].decode(errors="replace")
        problem = None
        ours = "sedsl: interrupted" in errors or f"{ROOT / 'sedsl'}{os.sep}" in errors
        if ours and errors != "sedsl: interrupted\n":
            problem = f"a traceback or more after the interrupt: {errors[-800:]}"
        elif proc.returncode not in (0, 1, 130, -signal.SIGINT):
            problem = f"exit {proc.returncode}: {errors[-800:]}"
        else:
            files_now = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
            leftovers = [p.name for p in parent.iterdir() if p.name.startswith(".")]
            if files_now != ["graph.json", "model.py", "summary.json"] or leftovers:
                problem = f"the build folder holds {files_now}, beside it {leftovers}"
            else:
                model = (target / "model.py").read_text()
                summary = json.loads((target / "summary.json").read_text())
                classes = 7 if "nn.Linear(8, 7" in model else 10
                if summary["base"]["params"] != 216 + 16 + 9 * classes:
                    problem = "model.py and summary.json come from different builds"
        if problem:
            self.failures.append(("crash", f"Ctrl-C after {delay:.2f} s", problem))
            self.outcomes["crash"] += 1
        else:
            self.outcomes[f"Ctrl-C: exit {proc.returncode}"] += 1


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
    parser.add_argument("--cli", type=int, default=0, metavar="N",
                        help="then N command lines, and N // 10 builds Ctrl-C'd at random")
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
    print(f"slowest input: {result.slowest_input}")
    failures = result.failures
    if args.cli:
        start = time.perf_counter()
        cli = cli_sample(args.cli, args.seed, max(1, args.cli // 10))
        print(f"command lines {args.cli} and Ctrl-C'd builds {max(1, args.cli // 10)} "
              f"({time.perf_counter() - start:.0f} s wall, slowest {cli.slowest:.1f} s: "
              f"{cli.slowest_input}):")
        for outcome, count in sorted(cli.outcomes.items()):
            print(f"  {outcome:<20} {count}")
        failures = failures + cli.failures
    for kind, text, error in failures:
        print(f"\n{kind}: {error}\n{text}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
