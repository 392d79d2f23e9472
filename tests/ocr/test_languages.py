"""Language codes as the original hailo-ocr's clients write them (ocr/languages.py)."""

from __future__ import annotations

import pytest

from ocr.languages import choose_language, normalise_language, normalise_languages, quote_codes

ZH_ALIASES = ["zh", "ch_sim", "ch", "chinese", "Chinese", "zh-CN", "zh_CN", "zh-Hans", "ch_tra",
              "zh-TW", "zh_tw", "ZH-HANT-TW", "CH_SIM", " zh "]
EN_ALIASES = ["en", "EN", "en-US", "en_GB", "english", "English", "ENGLISH", "en-au", "eng"]


@pytest.mark.parametrize("code", ZH_ALIASES)
def test_chinese_aliases_name_the_zh_model(code):
    assert normalise_language(code) == "zh"


@pytest.mark.parametrize("code", EN_ALIASES)
def test_english_aliases_name_the_en_model(code):
    assert normalise_language(code) == "en"


@pytest.mark.parametrize("code,expected", [("fr", "fr"), ("fr-CA", "fr"), ("Klingon", "klingon"),
                                           ("", "")])
def test_other_codes_keep_their_primary_subtag(code, expected):
    assert normalise_language(code) == expected


def test_normalise_languages_drops_duplicates_in_order():
    assert normalise_languages(["ch_sim", "en-US", "zh", "ch_tra", "english"]) == ("zh", "en")


def test_the_first_supported_language_is_chosen():
    supported = ("en", "zh")
    assert choose_language([], supported, "en") == choose_language((), supported, "en")
    assert choose_language([], supported, "en").language == "en"
    assert choose_language(["zh-CN", "en"], supported, "en").language == "zh"
    choice = choose_language(["en", "zh"], supported, "zh")
    assert (choice.language, choice.unsupported) == ("en", ())


def test_unsupported_languages_before_the_chosen_one_are_reported():
    supported = ("en", "zh")
    choice = choose_language(["fr", "de", "ch_sim", "ja"], supported, "en")
    assert (choice.language, choice.unsupported) == ("zh", ("fr", "de"))
    choice = choose_language(["fr", "de"], supported, "en")
    assert (choice.language, choice.unsupported) == ("en", ("fr", "de"))
    # Only Chinese loaded: English is unsupported, the default answers.
    choice = choose_language(["en"], ("zh",), "zh")
    assert (choice.language, choice.unsupported) == ("zh", ("en",))


def test_quoted_codes_are_bounded():
    assert quote_codes(["fr"]) == "'fr'"
    long = quote_codes(["x" * 200] * 1000)
    assert long == "'" + "x" * 32 + "...'"
    many = quote_codes([f"l{i}" for i in range(1000)])
    assert many.startswith("'l0', 'l1'") and many.endswith("and 995 more")
    assert len(many) < 80
