"""A bounded regular-expression engine for route matching: linear time, no backtracking.

Why not :mod:`re`: Python's engine backtracks, so a pattern such as ``(a+)+b`` against a long
run of ``a`` takes exponential time -- one bad route (or one bad request against a
careless route) would stall the gateway's only thread.  Routes are matched on every request,
so their patterns run here instead, in the manner of RE2:

* :func:`compile_pattern` parses a safe subset of the ``re`` syntax and refuses the rest with a
  :class:`PatternRefused` that says why: backreferences, lookaround, anchors other than a
  leading ``^``/trailing ``$``, inline flags, named groups, possessive quantifiers, counted
  repetitions above :data:`MAX_REPEAT`, and patterns longer than :data:`MAX_PATTERN_CHARS`
  or whose automaton would exceed :data:`MAX_NFA_STATES` states;
* the pattern becomes a Thompson NFA, simulated as a lazily built DFA: each DFA state (a set
  of NFA states) and its transitions are computed on first use and cached, so a warm match
  costs one dictionary lookup per input byte.  The cache holds at most
  :data:`MAX_DFA_STATES` states; past that it is flushed (RE2 does the same), so memory is
  bounded and a pathological pattern costs at most ``O(len(input) * NFA states)`` steps.

Semantics: a pattern matches the **whole** value (as ``re.fullmatch``), byte by byte
(values are bytes; ``.`` is any byte but ``\\n``).  Supported: literals, ``.``, classes
``[a-z_]``/``[^...]``, ``\\d \\w \\s`` and their negations, escapes of punctuation, ``\\n \\t
\\r \\f \\v \\xHH``, groups ``(...)``/``(?:...)``, ``|``, ``* + ?`` and ``{m}``, ``{m,}``,
``{m,n}`` (lazy forms are accepted: for a yes/no full match they mean the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.routes.regex_starts import Node, literal_prefix, required_bytes

MAX_PATTERN_CHARS = 1024
MAX_REPEAT = 100
MAX_NFA_STATES = 2000
MAX_DFA_STATES = 256

_ALL = frozenset(range(256))
_DIGIT = frozenset(range(0x30, 0x3A))
_WORD = frozenset([*range(0x30, 0x3A), *range(0x41, 0x5B), *range(0x61, 0x7B), 0x5F])
_SPACE = frozenset(b" \t\n\r\f\v")
_CLASS_ESCAPES = {
    "d": _DIGIT,
    "D": _ALL - _DIGIT,
    "w": _WORD,
    "W": _ALL - _WORD,
    "s": _SPACE,
    "S": _ALL - _SPACE,
}
_CHAR_ESCAPES = {"n": 0x0A, "t": 0x09, "r": 0x0D, "f": 0x0C, "v": 0x0B}
_SPECIAL = set("\\.^$*+?{}[]()|")


class PatternRefused(ValueError):
    """The pattern is outside the supported subset or over a size bound (the text says why)."""


# -- parsing: pattern text -> a small AST ------------------------------------------------------

# AST nodes: ("set", frozenset[int]) | ("cat", list) | ("alt", list) | ("rep", node, lo, hi|None)
MAX_NESTING = 50


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.depth = 0

    def refuse(self, why: str) -> PatternRefused:
        return PatternRefused(f"{why} (at offset {self.i})")

    def peek(self) -> str | None:
        return self.text[self.i] if self.i < len(self.text) else None

    def parse(self) -> Node:
        node = self.alternation()
        if self.i != len(self.text):
            raise self.refuse("unbalanced ')'")
        return node

    def alternation(self) -> Node:
        branches = [self.concat()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concat())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concat(self) -> Node:
        items: list[Node] = []
        while (c := self.peek()) is not None and c not in "|)":
            items.append(self.repeat())
        return ("cat", items)

    def repeat(self) -> Node:
        if self.peek() in ("*", "+", "?", "{"):
            raise self.refuse("nothing to repeat")
        atom = self.atom()
        quant = self.quantifier()
        if quant is None:
            return atom
        lo, hi = quant
        if self.peek() == "?":
            self.i += 1  # lazy: the same yes/no answer for a full match
        if self.peek() in ("*", "+", "?", "{"):
            raise self.refuse("multiple repeat (possessive or stacked quantifiers)")
        return ("rep", atom, lo, hi)

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c == "*":
            self.i += 1
            return 0, None
        if c == "+":
            self.i += 1
            return 1, None
        if c == "?":
            self.i += 1
            return 0, 1
        if c != "{":
            return None
        end = self.text.find("}", self.i)
        body = self.text[self.i + 1 : end] if end >= 0 else ""
        lo_text, comma, hi_text = body.partition(",")
        if end < 0 or not lo_text.isdigit() or (hi_text and not hi_text.isdigit()):
            raise self.refuse("'{' must start a counted repetition {m}, {m,} or {m,n}")
        lo = int(lo_text)
        hi = lo if not comma else (int(hi_text) if hi_text else None)
        if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
            raise self.refuse(f"counted repetition above {MAX_REPEAT}")
        if hi is not None and hi < lo:
            raise self.refuse("counted repetition {m,n} with n < m")
        self.i = end + 1
        return lo, hi

    def atom(self) -> Node:
        c = self.text[self.i]
        if c == "(":
            self.i += 1
            if self.peek() == "?":
                if self.text.startswith("?:", self.i):
                    self.i += 2
                else:
                    raise self.refuse(
                        "only '(?:' groups are supported (no lookaround, flags or names)"
                    )
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self.refuse(f"groups nested deeper than {MAX_NESTING}")
            node = self.alternation()
            self.depth -= 1
            if self.peek() != ")":
                raise self.refuse("missing ')'")
            self.i += 1
            return node
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            self.i += 1
            return ("set", _ALL - {0x0A})
        if c == "\\":
            return ("set", self.escape(in_class=False))
        if c in "^$":
            raise self.refuse(f"'{c}' is only allowed at the start ('^') or end ('$')")
        self.i += 1
        return ("set", frozenset({_byte(c, self)}))

    def escape(self, *, in_class: bool) -> frozenset[int]:
        self.i += 1
        c = self.peek()
        if c is None:
            raise self.refuse("pattern ends with '\\'")
        self.i += 1
        if c in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[c]
        if c in _CHAR_ESCAPES:
            return frozenset({_CHAR_ESCAPES[c]})
        if c == "x":
            digits = self.text[self.i : self.i + 2]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.refuse("\\x needs two hex digits")
            self.i += 2
            return frozenset({int(digits, 16)})
        if c.isdigit():
            raise self.refuse("backreferences are not supported")
        if c.isalnum():
            raise self.refuse(f"'\\{c}' is not supported (no anchors, boundaries or classes)")
        return frozenset({_byte(c, self)})

    def char_class(self) -> frozenset[int]:
        self.i += 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        members: set[int] = set()
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.refuse("missing ']'")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if c == "[":
                raise self.refuse("'[' inside a class must be escaped")
            low = self.class_item()
            if isinstance(low, frozenset):
                members |= low
                continue
            if self.peek() == "-" and self.text[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                high = self.class_item()
                if isinstance(high, frozenset) or high < low:
                    raise self.refuse("bad range in a character class")
                members.update(range(low, high + 1))
            else:
                members.add(low)
        chars = frozenset(members)
        return _ALL - chars if negate else chars

    def class_item(self) -> int | frozenset[int]:
        if self.peek() == "\\":
            got = self.escape(in_class=True)
            return next(iter(got)) if len(got) == 1 else got
        c = self.text[self.i]
        self.i += 1
        return _byte(c, self)


def _byte(c: str, parser: _Parser) -> int:
    if not (0x20 <= ord(c) < 0x7F):
        raise parser.refuse("patterns must be printable ASCII (use \\xHH for other bytes)")
    return ord(c)


# -- the automaton --------------------------------------------------------------------------

_CHAR, _SPLIT, _MATCH = 0, 1, 2


class _Builder:
    """A Thompson NFA in flat lists, built back to front (each fragment knows its successor)."""

    def __init__(self) -> None:
        self.kind: list[int] = []
        self.sets: list[frozenset[int]] = []
        self.out1: list[int] = []
        self.out2: list[int] = []

    def add(self, kind: int, chars: frozenset[int], out1: int, out2: int) -> int:
        if len(self.kind) >= MAX_NFA_STATES:
            raise PatternRefused(f"pattern too large (over {MAX_NFA_STATES} automaton states)")
        self.kind.append(kind)
        self.sets.append(chars)
        self.out1.append(out1)
        self.out2.append(out2)
        return len(self.kind) - 1

    def build(self, node: Node, nxt: int) -> int:
        tag = node[0]
        if tag == "set":
            return self.add(_CHAR, node[1], nxt, -1)
        if tag == "cat":
            for item in reversed(node[1]):
                nxt = self.build(item, nxt)
            return nxt
        if tag == "alt":
            start = self.build(node[1][-1], nxt)
            for branch in reversed(node[1][:-1]):
                start = self.add(_SPLIT, _ALL, self.build(branch, nxt), start)
            return start
        _, body, lo, hi = node
        cur = nxt
        if hi is None:
            loop = self.add(_SPLIT, _ALL, -1, nxt)
            self.out1[loop] = self.build(body, loop)
            cur = loop
        else:
            for _ in range(hi - lo):
                cur = self.add(_SPLIT, _ALL, self.build(body, cur), nxt)
        for _ in range(lo):
            cur = self.build(body, cur)
        return cur


@dataclass(slots=True)
class _Dfa:
    """The lazily built DFA (mutable cache; bounded by :data:`MAX_DFA_STATES`)."""

    ids: dict[frozenset[int], int] = field(default_factory=dict)
    states: list[frozenset[int]] = field(default_factory=list)
    accepting: list[bool] = field(default_factory=list)
    trans: list[dict[int, int]] = field(default_factory=list)
    flushes: int = 0


class Regex:
    """A compiled pattern; :meth:`fullmatch` says whether a whole value matches."""

    __slots__ = (
        "_dfa",
        "_kind",
        "_match",
        "_out1",
        "_out2",
        "_sets",
        "_start",
        "pattern",
        "prefix",
        "required",
        "steps",
    )

    def __init__(
        self,
        pattern: str,
        builder: _Builder,
        start: int,
        match: int,
        prefix: tuple[bytes, ...] = (),
        required: bytes = b"",
    ) -> None:
        self.pattern = pattern
        #: Literal starts, one of which every match begins with (``/api/v`` of
        #: ``/api/v[0-9]+``; empty: unknown): lets a route table skip the pattern for values
        #: that cannot match, by dictionary lookups.
        self.prefix = prefix
        #: Bytes every match contains (``/r1/`` of ``[^?]*/r1/[0-9]+``): a value without them
        #: is refused by ``in`` (C speed) before the automaton runs.
        self.required = required
        self._kind = builder.kind
        self._sets = builder.sets
        self._out1 = builder.out1
        self._out2 = builder.out2
        self._match = match
        #: NFA states visited so far (for tests: work grows linearly with the input).
        self.steps = 0
        self._start = self._closure((start,))
        self._dfa = _Dfa()
        self._intern(self._start)

    @property
    def nfa_states(self) -> int:
        return len(self._kind)

    @property
    def cache_flushes(self) -> int:
        return self._dfa.flushes

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"

    def _closure(self, seeds: tuple[int, ...] | list[int]) -> frozenset[int]:
        """The consuming states (and the match state) reachable from ``seeds`` by epsilon."""
        kind, out1, out2 = self._kind, self._out1, self._out2
        seen: set[int] = set()
        stack = list(seeds)
        result: set[int] = set()
        while stack:
            s = stack.pop()
            if s in seen:
                continue
            seen.add(s)
            self.steps += 1
            if kind[s] == _SPLIT:
                stack.append(out2[s])
                stack.append(out1[s])
            else:
                result.add(s)
        return frozenset(result)

    def _intern(self, states: frozenset[int]) -> int:
        dfa = self._dfa
        got = dfa.ids.get(states)
        if got is not None:
            return got
        if len(dfa.states) >= MAX_DFA_STATES:
            # Flush, keeping only the start state (id 0): memory stays bounded.
            dfa.flushes += 1
            flushes = dfa.flushes
            self._dfa = dfa = _Dfa(flushes=flushes)
            if states != self._start:
                self._intern(self._start)
        dfa.ids[states] = len(dfa.states)
        dfa.states.append(states)
        dfa.accepting.append(self._match in states)
        dfa.trans.append({})
        return len(dfa.states) - 1

    def _step(self, current: int, byte: int) -> int:
        dfa = self._dfa
        nexts = [self._out1[s] for s in dfa.states[current] if byte in self._sets[s]]
        self.steps += len(dfa.states[current])
        target = self._intern(self._closure(nexts))
        if self._dfa is dfa:  # no flush happened: remember the edge
            dfa.trans[current][byte] = target
        return target

    def fullmatch(self, value: bytes) -> bool:
        """True if the whole of ``value`` matches the pattern."""
        state = self._dfa.ids[self._start]
        for byte in value:
            dfa = self._dfa
            nxt = dfa.trans[state].get(byte)
            self.steps += 1
            if nxt is None:
                nxt = self._step(state, byte)
            state = nxt
            if not self._dfa.states[state]:
                return False
        return self._dfa.accepting[state]


def compile_pattern(pattern: str) -> Regex:
    """Compile ``pattern`` (see the module docstring for the subset); raises PatternRefused."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternRefused(f"pattern longer than {MAX_PATTERN_CHARS} characters")
    text = pattern
    if text.startswith("^"):
        text = text[1:]
    if text.endswith("$") and not text.endswith("\\$"):
        text = text[:-1]
    node = _Parser(text).parse()
    builder = _Builder()
    match = builder.add(_MATCH, frozenset(), -1, -1)
    start = builder.build(node, match)
    return Regex(pattern, builder, start, match, literal_prefix(node), required_bytes(node))


def pattern_problem(pattern: str) -> str | None:
    """For config checks: why ``pattern`` is refused, or None."""
    try:
        compile_pattern(pattern)
    except PatternRefused as exc:
        return f"regex refused: {exc}"
    return None
