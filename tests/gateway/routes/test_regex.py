"""The bounded regex engine: the same answers as ``re.fullmatch`` on its subset, linear work
on the patterns that make a backtracking engine blow up, and a clear refusal of the rest."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routes import regex as engine
from gateway.routes.regex import PatternRefused, compile_pattern, pattern_problem

LEAVES = st.sampled_from(["a", "b", "/", r"\.", ".", "[ab]", "[^a]", r"\d", "[a-c/]", r"\w", ""])


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantifier = st.sampled_from(["*", "+", "?", "{2}", "{0,2}", "{1,}", "*?", "{1,3}?"])
    return st.one_of(
        st.tuples(children, children).map("".join),
        st.tuples(children, children).map("|".join),
        children.map(lambda c: f"({c})"),
        st.tuples(children, quantifier).map(lambda t: f"(?:{t[0]}){t[1]}"),
    )


PATTERNS = st.recursive(LEAVES, _combine, max_leaves=8)
INPUTS = st.text(alphabet="ab/.1", max_size=12)


@settings(max_examples=400, deadline=None)
@given(PATTERNS, st.lists(INPUTS, min_size=1, max_size=8))
def test_answers_like_re_fullmatch_on_the_supported_subset(pattern: str, texts: list[str]) -> None:
    compiled = compile_pattern(pattern)
    for text in texts:
        expected = re.fullmatch(pattern, text) is not None
        assert compiled.fullmatch(text.encode()) is expected, (pattern, text)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("^/api/v[0-9]+/.*$", "/api/v2/users", "/api/vx/users"),
        (r"[^/]+\.(?:js|css)", "app.min.js", "a/b.js"),
        (r"\x41{2}", "AA", "A"),
        (r"[\]a-]+", "]-a", "b"),
        ("a{0}b", "b", "ab"),
        (r"\$", "$", ""),
    ],
)
def test_examples(pattern: str, yes: str, no: str) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.fullmatch(yes.encode()) and re.fullmatch(pattern, yes)
    assert not compiled.fullmatch(no.encode()) and not re.fullmatch(pattern, no)


def _bound(compiled: engine.Regex, length: int) -> int:
    """Work an NFA simulation may do: every state, twice (closure and step), per byte."""
    return (length + 1) * (2 * compiled.nfa_states + 2)


@pytest.mark.parametrize("pattern", ["(a+)+b", "(a|aa)*c", "(a*)*b", "(?:a|a)*b"])
def test_classic_blow_up_patterns_run_in_linear_steps(pattern: str) -> None:
    """These take exponential time in ``re`` on ``a...a`` with no match; here each byte costs
    at most one pass over the automaton's states (and once cached, one lookup)."""
    for n in (32, 1024, 8192):
        compiled = compile_pattern(pattern)
        assert compiled.fullmatch(b"a" * n) is False
        assert compiled.steps <= _bound(compiled, n)
    warm = compile_pattern(pattern)
    warm.fullmatch(b"a" * 64)
    before = warm.steps
    warm.fullmatch(b"a" * 64)
    assert warm.steps - before <= 64  # warm: one cached transition per byte


def test_a_state_explosion_flushes_the_cache_and_stays_linear() -> None:
    """``(a|b)*a(a|b){12}`` has 2**13 DFA states: the cache is flushed when full (bounded
    memory), and the work per byte still stays within one pass over the NFA."""
    compiled = compile_pattern("(a|b)*a(a|b){12}")
    draw = random.Random(7)
    text = bytes(draw.choice(b"ab") for _ in range(20_000))
    assert compiled.fullmatch(text) is (re.fullmatch("(a|b)*a(a|b){12}", text.decode()) is not None)
    assert compiled.cache_flushes > 0
    assert len(compiled._dfa.states) <= engine.MAX_DFA_STATES
    assert compiled.steps <= _bound(compiled, len(text))


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "backreference"),
        ("(?=a)a", "lookaround"),
        ("(?<=a)b", "lookaround"),
        ("(?!a)b", "lookaround"),
        ("(?P<x>a)", "lookaround, flags or names"),
        ("(?i)a", "lookaround, flags or names"),
        (r"\bword", "not supported"),
        ("a^b", "only allowed at the start"),
        ("a{1000}", "above 100"),
        ("(?:a{100}){100}", "too large"),
        ("a" * 1025, "longer than 1024"),
        ("a*+", "multiple repeat"),
        ("a**", "multiple repeat"),
        ("*a", "nothing to repeat"),
        ("(" * 60 + ")" * 60, "nested deeper"),
        ("[a", "missing ']'"),
        ("(a", "missing ')'"),
        ("a)", "unbalanced"),
        ("a{2", "counted repetition"),
        ("é", "printable ASCII"),
        ("[z-a]", "bad range"),
    ],
)
def test_refuses_what_it_cannot_bound_or_does_not_support(pattern: str, why: str) -> None:
    with pytest.raises(PatternRefused, match=re.escape(why)):
        compile_pattern(pattern)
    assert pattern_problem(pattern) is not None


@settings(max_examples=400, deadline=None)
@given(PATTERNS, st.lists(INPUTS, min_size=1, max_size=8))
def test_every_match_starts_with_one_of_the_literal_starts(pattern: str, texts: list[str]) -> None:
    """The route table's index skips a pattern for a path without one of these starts."""
    compiled = compile_pattern(pattern)
    if not compiled.prefix:
        return
    assert b"" not in compiled.prefix
    for text in texts:
        if re.fullmatch(pattern, text):
            assert text.encode().startswith(compiled.prefix), (pattern, text)


def test_literal_starts() -> None:
    assert compile_pattern("/api/v[0-9]+/.*").prefix == (b"/api/v",)
    assert compile_pattern("(?:/r1|/q1)/[a-z]+").prefix == (b"/q1/", b"/r1/")
    assert compile_pattern("/[ab]c*").prefix == (b"/a", b"/b")
    assert compile_pattern("[^?]*/x").prefix == ()
    assert compile_pattern("a?b").prefix == ()


@settings(max_examples=400, deadline=None)
@given(PATTERNS, st.lists(INPUTS, min_size=1, max_size=8))
def test_every_match_contains_the_required_bytes(pattern: str, texts: list[str]) -> None:
    """The route table refuses a value without them before running the automaton."""
    compiled = compile_pattern(pattern)
    for text in texts:
        if re.fullmatch(pattern, text):
            assert compiled.required in text.encode(), (pattern, text)


def test_required_bytes() -> None:
    assert compile_pattern("[^?]*/r12/[a-z]+").required == b"/r12/"
    assert compile_pattern("a|bcd").required == b""
    assert compile_pattern("x*abc(?:d|e)fg").required == b"abc"
