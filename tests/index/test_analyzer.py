from __future__ import annotations

import pytest

from index.analyzer import Analyzer
from index.config import AnalyzerConfig


def test_lowercase_stopwords_and_stemming():
    assert Analyzer().tokenize("The Running DOGS are in the garden") == ["run", "dog", "garden"]


def test_same_tokens_at_index_and_query_time():
    a = Analyzer()
    assert a.tokenize("Connected connections") == a.tokenize("connect CONNECTION")


def test_unicode_scripts():
    tokens = Analyzer(AnalyzerConfig(stemmer=None)).tokenize("Café 東京 مرحبا 😀 naïve")
    assert tokens == ["café", "東", "京", "مرحبا", "naïve"]


def test_long_tokens_are_cut():
    (token,) = Analyzer(AnalyzerConfig(stemmer=None)).tokenize("x" * 10_000)
    assert len(token) == 64


def test_no_stopwords_no_stemmer():
    a = Analyzer(AnalyzerConfig(stopwords=None, stemmer=None))
    assert a.tokenize("The running") == ["the", "running"]


def test_custom_stopword_list():
    assert Analyzer(AnalyzerConfig(stopwords=["Garden"], stemmer=None)).tokenize("the garden") == ["the"]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown stemmer 'klingon'"):
        Analyzer(AnalyzerConfig(stemmer="klingon"))
    with pytest.raises(ValueError, match="unknown stopword list"):
        Analyzer(AnalyzerConfig(stopwords="klingon"))
    with pytest.raises(TypeError, match="must be a str"):
        Analyzer().tokenize(None)
