"""Snippets in a results table: a window around the first query term, terms matched by the analyzer and marked,
one line of inert text whatever the document holds."""

from __future__ import annotations

from index.analyzer import Analyzer
from index.config import AnalyzerConfig
from retrieval.cli import terminal_safe
from retrieval.commands.snippet import SNIPPET_CHARS, snippet, term_matcher


def test_terms_are_matched_as_bm25_matches_them():
    matches = term_matcher("Are the tides rising?")
    assert matches("tide") and matches("Tides") and matches("rise")  # stems, any case
    assert not matches("the") and not matches("are")  # stopwords mark nothing
    exact = term_matcher("Tides", Analyzer(AnalyzerConfig(stemmer=None, stopwords=None)))
    assert exact("tides") and not exact("tide")


def test_marks_each_term_in_brackets_or_bold():
    matches = term_matcher("ocean tides")
    text = "Ocean tides follow the Moon; tides are highest at spring."
    assert snippet(text, matches, terminal_safe) == "[Ocean] [tides] follow the Moon; [tides] are highest at spring."
    bold = snippet(text, matches, terminal_safe, bold=True)
    assert bold.startswith("\x1b[1mOcean\x1b[0m \x1b[1mtides\x1b[0m follow")


def test_window_starts_shortly_before_the_first_match_and_is_one_line():
    text = "filler words here\n" * 30 + "the ocean tides\tare here " + "more words " * 30
    shown = snippet(text, term_matcher("tides"), terminal_safe)
    assert shown.startswith("…") and shown.endswith("…") and "[tides]" in shown
    assert shown.index("[tides]") < SNIPPET_CHARS // 2 and len(shown) <= SNIPPET_CHARS + 4
    assert "\n" not in shown and "\t" not in shown
    assert snippet("short text", term_matcher("nothing"), terminal_safe) == "short text"  # no match: the start


def test_control_characters_are_shown_escaped_and_marks_stay_intact():
    shown = snippet("ocean \x1b[31mred\x1b[0m \u202etides", term_matcher("ocean tides"), terminal_safe, bold=True)
    assert shown.count("\x1b") == 4  # the two bold marks, opened and closed; the document's own ESCs are escaped
    assert "\\x1b[31mred" in shown and "\\u202e" in shown
