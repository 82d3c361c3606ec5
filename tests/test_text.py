"""Text front end: normalisation, espeak-ng G2P (real phonemizer, no mocks), phoneme vocabulary.

Phoneme golden strings come from espeak-ng 1.51 (Debian bookworm); regenerate with
`.venv/bin/python -c "from text import G2P; print(G2P('en-us')('hello world'))"` if espeak-ng changes.
"""

import json
import pickle
from pathlib import Path

import pytest

from text import BOS, EOS, G2P, PAD, PhonemeVocab, TextError, normalize_text, split_sentences, text_to_ids
from text.check_inventory import main as check_inventory_main
from text.normalize import spell_number, spell_ordinal, spell_year


@pytest.fixture(scope="module")
def g2p() -> G2P:
    return G2P("en-us")


# ---------------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$3.50", "three dollars fifty cents"),
        ("It cost $1.", "It cost one dollar."),
        ("$0.01", "one cent"),
        ("$2.5 million", "two point five million dollars"),
        ("£3.20 or €5 or 5€", "three pounds twenty pence or five euros or five euros"),
        ("Dr. Smith", "Doctor Smith"),
        ("Mr. and Mrs. Jones", "Mister and Missus Jones"),
        ("St. Paul lives at 12 Baker St. Then", "Saint Paul lives at twelve Baker Street. Then"),
        ("apples, pears, etc. I like them.", "apples, pears, et cetera. I like them."),
        ("cats vs. dogs", "cats versus dogs"),
        ("1999", "nineteen ninety nine"),
        ("in 2000, 2005, 1905, 2024", "in two thousand, two thousand five, nineteen oh five, twenty twenty four"),
        ("1800", "eighteen hundred"),
        ("the 1990s", "the nineteen nineties"),
        ("3rd", "third"),
        ("1st 2nd 11th 12th 21st 100th", "first second eleventh twelfth twenty first one hundredth"),
        ("10%", "ten percent"),
        ("2.5% and -3%", "two point five percent and minus three percent"),
        ("3.14", "three point one four"),
        ("-5 degrees", "minus five degrees"),
        ("1,234,567", "one million two hundred thirty four thousand five hundred sixty seven"),
        ("007", "zero zero seven"),
        ("at 3:30 pm.", "at three thirty P M."),
        ("at 12:00 and 10:05", "at twelve o'clock and ten oh five"),
        ("7am", "seven A M"),
        ("pages 5-10", "pages five to ten"),
        ("2023-05-17", "May seventeenth, twenty twenty three"),
        ("1/2 cup", "one half cup"),
        ("R&D @ home", "R and D at home"),
        ("the U.S.A. is", "the U S A is"),
        ("\u201cHello,\u201d she said \u2014 \u2018quietly\u2019\u2026", "\"Hello,\" she said, 'quietly'..."),
        ("caf\u00e9\u00a0au\u200blait \ufb01ne", "café aulait fine"),
        ("Hello \U0001f600 world\u2122", "Hello world"),
        ("  spaced \n\n  out\t", "spaced out"),
    ],
)
def test_normalize_english(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalize_other_languages_keep_numbers_but_clean_punctuation() -> None:
    text = "\u00abBonjour\u00bb \u2014 dit-il\u2026 Il a 3 \u20ac et 2,5 kg."
    out = normalize_text(text, "fr-fr")
    assert out == '"Bonjour", dit-il... Il a 3 € et 2,5 kg.'  # digits left for espeak-ng's French number rules
    assert normalize_text("Dr. Müller hat 1999 gekauft", "de") == "Dr. Müller hat 1999 gekauft"


def test_number_speller() -> None:
    assert spell_number(0) == "zero"
    assert spell_number(115) == "one hundred fifteen"
    assert spell_number(1_000_001) == "one million one"
    assert spell_number(-42) == "minus forty two"
    assert spell_ordinal(40) == "fortieth" and spell_ordinal(1002) == "one thousand second"
    assert spell_year(2010) == "twenty ten" and spell_year(1066) == "ten sixty six"


def test_normalize_rejects_non_text() -> None:
    with pytest.raises(TextError, match="expected text as str"):
        normalize_text(None)  # type: ignore[arg-type]


def test_split_sentences() -> None:
    text = 'Hi Mr. Li. It is 3.5 km away. Really?! "Yes." J. R. R. Tolkien wrote it...\n\nNew paragraph'
    assert split_sentences(text) == [
        "Hi Mr. Li.",
        "It is 3.5 km away.",
        "Really?!",
        '"Yes."',
        "J. R. R. Tolkien wrote it...",
        "New paragraph",
    ]
    assert split_sentences("   ") == []


def test_split_sentences_max_chars() -> None:
    text = "one, two, three; four: five six seven eight nine ten eleven. Short."
    pieces = split_sentences(text, max_chars=16)
    assert all(len(p) <= 16 for p in pieces)
    assert " ".join(pieces) == text  # nothing lost, order kept
    assert pieces[-1] == "Short."
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences(text, max_chars=0)


# ------------------------------------------------------------------------------------------------------- G2P


def test_known_words_real_espeak(g2p: G2P) -> None:
    assert g2p("hello world") == "həlˈoʊ wˈɜːld"
    assert g2p("Hello, world!") == "həlˈoʊ, wˈɜːld!"
    assert G2P("en-gb")("hello cat") == "həlˈəʊ kˈat"
    assert G2P("de")("Guten Tag, Straße") == "ɡˈuːtən tˈɑːk, ʃtɾˈɑːsə"
    assert G2P("fr")("Bonjour") == "bɔ̃ʒˈuʁ"
    assert G2P("es")("Hola, niño") == "ˈola, nˈiɲo"


def test_normalised_before_phonemising(g2p: G2P) -> None:
    assert g2p("$3.50") == g2p("three dollars fifty cents") == "θɹˈiː dˈɑːlɚz fˈɪfti sˈɛnts"
    assert g2p("Dr. Smith") == g2p("Doctor Smith")
    assert g2p("It's 1999.") == g2p("It's nineteen ninety nine.")


def test_punctuation_inside_numbers_does_not_split_the_line() -> None:
    # phonemizer's own preserve_punctuation cuts at the first "." even inside "8.3" and returns 2 lines for 1
    de = G2P("de")
    out = de.phonemize(["im 8.3-Format erzeugen.", "Hallo."])
    assert out == ["ɪm ˈaxt pʊŋkt dɾˈaɪfɔɾmˈɑːt ɛɾtsˈɔøɡən.", "hˈaloː."]


def test_batch_equals_one_by_one() -> None:
    texts = ["Hello, world!", "Dr. Smith paid $3.50.", "It was 1999.", "Hello, world!", "Is it 3:30? Yes; quite.",
             '"Quoted," she said (twice).', "well-known don't"]  # fmt: skip
    batched = G2P("en-us").phonemize(texts)
    uncached = G2P("en-us", cache_size=0)
    one_by_one = [uncached(t) for t in texts]
    assert batched == one_by_one
    assert batched[0] == batched[3]
    assert len(set(batched)) == len(texts) - 1


def test_cache_lru() -> None:
    g = G2P("en-us", cache_size=2)
    first = g("alpha")
    assert g.cache_info().misses == 1 and g.cache_info().hits == 0
    assert g("alpha") == first
    assert g.cache_info().hits == 1
    g.phonemize(["beta", "gamma"])  # alpha is the least recently used: evicted
    info = g.cache_info()
    assert info.size == 2 and info.max_size == 2
    g("gamma")
    assert g.cache_info().hits == 2
    g("alpha")
    assert g.cache_info().misses == 4  # alpha was recomputed
    g.clear_cache()
    assert g.cache_info().size == 0


@pytest.mark.parametrize("text", ["", "   ", "...", "\U0001f600", "-- ,"])
def test_empty_text_is_an_error(g2p: G2P, text: str) -> None:
    with pytest.raises(TextError, match="empty after normalisation") as err:
        g2p(text)
    assert repr(text) in str(err.value)


def test_unspeakable_text_is_an_error(g2p: G2P) -> None:
    # a Javanese letter: en-us cannot read the script (espeak-ng would say nothing), so nothing speakable is left
    with pytest.raises(TextError, match="cannot read its script.*Javanese") as err:
        g2p.phonemize(["fine", "\ua984"])
    assert "item 1" in str(err.value) and repr("\ua984") in str(err.value)


def test_language_checks() -> None:
    with pytest.raises(ValueError, match="did you mean"):
        G2P("en-uk")
    assert G2P("fr").language == "fr-fr"
    with pytest.raises(TypeError, match="list of texts"):
        G2P().phonemize("not a list")  # type: ignore[arg-type]


def test_g2p_pickles_for_worker_processes(g2p: G2P) -> None:
    g2p("warm the backend up")
    clone = pickle.loads(pickle.dumps(g2p))
    assert clone("hello world") == g2p("hello world")


# ---------------------------------------------------------------------------------------------------- vocab


def test_vocab_round_trip(g2p: G2P) -> None:
    vocab = PhonemeVocab.default()
    texts = ["Hello, world!", "Dr. Smith paid $3.50 on the 3rd (really?).", "It's 10% of 1999; quite: 'yes'."]
    for phonemes in g2p.phonemize(texts):
        ids = vocab.encode(phonemes)
        assert min(ids) > EOS and len(ids) == len(phonemes)
        assert vocab.decode(ids) == phonemes
        wrapped = vocab.encode(phonemes, add_bos_eos=True)
        assert wrapped[0] == BOS and wrapped[-1] == EOS and wrapped[1:-1] == ids
        assert vocab.decode(wrapped + [PAD, PAD]) == phonemes
    assert vocab.decode([BOS, vocab.encode("a")[0], EOS], skip_special=False) == "<bos>a<eos>"


# The inventory as first released, pinned: ids index saved corpora and trained embeddings, so symbols may only be
# appended (text/vocab.py `_ADDED`), never inserted, removed or reordered.
_PINNED_INVENTORY = (
    " .,!?;:\"()-'¡¿"
    "ˈˌːˑ˥˦˧˨˩"
    "\u0303\u0329\u032f\u0325\u030a\u0361\u0306\u0308\u031a\u0324\u0330\u032a\u033a\u031d\u031e\u0320\u031f\u0339\u031c"
    "aeiouyæɐɑɒɔəɘɚɛɜɝɞɤɨɪɯɵɶʉʊʌʏøœᵻɿʅ"
    "bcdfghjklmnpqrstvwxzçðħŋɓɕɖɗɟɠɡɢɣɥɦɧɫɬɭɮɰɱɲɳɴɸɹɺɻɽɾʀʁʂʃʄʈʋʍʎʐʑʒʔʕʙʛʜʝʟʡʢβθχ"
    "ʰʲʷˠˤʼⁿˡ˞ʱ"
)


def test_vocab_ids_are_stable() -> None:
    vocab = PhonemeVocab.default()
    assert vocab.symbols[: len(_PINNED_INVENTORY)] == list(_PINNED_INVENTORY)
    assert vocab.encode(_PINNED_INVENTORY) == list(range(3, 3 + len(_PINNED_INVENTORY)))
    assert (PAD, BOS, EOS) == (0, 1, 2) and vocab.decode([0, 1, 2], skip_special=False) == "<pad><bos><eos>"


def test_vocab_unknown_symbol_and_empty() -> None:
    vocab = PhonemeVocab.default()
    with pytest.raises(TextError, match=r"unknown phoneme symbol 'Ж' \(U\+0416 CYRILLIC CAPITAL LETTER ZHE\)"):
        vocab.encode("həlЖoʊ")
    with pytest.raises(TextError, match="empty phoneme string"):
        vocab.encode("")
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([len(vocab)])
    with pytest.raises(ValueError, match="duplicate"):
        PhonemeVocab(["a", "b", "a"])


def test_vocab_save_load(tmp_path: Path) -> None:
    vocab = PhonemeVocab.default()
    path = tmp_path / "data" / "phonemes.json"
    vocab.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["phonemes.json"]  # no temp file left behind
    loaded = PhonemeVocab.load(path)
    assert loaded == vocab and loaded.encode("həlˈoʊ") == vocab.encode("həlˈoʊ")
    assert json.loads(path.read_text(encoding="utf-8"))["symbols"][:3] == [" ", ".", ","]
    # a saved vocabulary is authoritative, even one that differs from today's default
    custom = PhonemeVocab(["a", "b"])
    custom.save(path)
    assert PhonemeVocab.load(path).encode("ba") == [4, 3]


def test_vocab_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        PhonemeVocab.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        PhonemeVocab.load(bad)
    bad.write_text('{"symbols": ["a"]}', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json is not a phoneme vocabulary"):
        PhonemeVocab.load(bad)


def test_text_to_ids(g2p: G2P) -> None:
    vocab = PhonemeVocab.default()
    ids = text_to_ids(["Hello.", "Dr. Who?"], g2p, vocab)
    assert ids == [vocab.encode(g2p("Hello.")), vocab.encode(g2p("Doctor Who?"))]
    with pytest.raises(TextError):
        text_to_ids(["fine", ""], g2p, vocab)


_FORTUNES = Path("/usr/share/games/fortunes")


@pytest.mark.skipif(not _FORTUNES.is_dir(), reason="Debian package fortunes-min/fortunes not installed")
@pytest.mark.parametrize("language", ["en-us", "en-gb"])
def test_inventory_covers_real_text(language: str) -> None:
    lines = []
    for name in ("fortunes", "literature", "science", "people"):
        file = _FORTUNES / name
        if file.is_file():
            text = file.read_text(encoding="utf-8", errors="replace")
            lines += [ln.strip() for ln in text.splitlines() if any(c.isalpha() for c in ln)][:150]
    assert len(lines) > 100
    vocab = PhonemeVocab.default()
    missing = {ch for phonemes in G2P(language).phonemize(lines) for ch in vocab.missing(phonemes)}
    assert not missing


def test_inventory_covers_german_french_spanish() -> None:
    samples = {
        "de": "Der Bär hat Glück: fünf Mädchen essen Brötchen. Ich lache, ach! Tschüss, Dschungel, Häuser.",
        "fr": "Un brun parfum de vin, bon et blanc; les amis sont arrivés. Œuf, cœur, fille, huit, oui!",
        "es": "¿El perro y el niño? ¡Llave, guerra, agua, cielo, zapato, jamón, ciudad, mayo, pingüino!",
    }
    vocab = PhonemeVocab.default()
    for language, text in samples.items():
        phonemes = G2P(language)(text)
        assert vocab.decode(vocab.encode(phonemes)) == phonemes, language


def test_check_inventory_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "lines.txt"
    corpus.write_text("Hello world.\n\n$3.50 is cheap!\n", encoding="utf-8")
    assert check_inventory_main(["--save", str(tmp_path / "v.json"), str(corpus)]) == 0
    assert PhonemeVocab.load(tmp_path / "v.json") == PhonemeVocab.default()
    assert "0 symbols missing" in capsys.readouterr().out
    with pytest.raises(SystemExit) as help_exit:
        check_inventory_main(["--help"])
    assert help_exit.value.code == 0
    with pytest.raises(SystemExit) as missing_file:
        check_inventory_main([str(tmp_path / "nope.txt")])
    assert missing_file.value.code == 2 and "nope.txt does not exist" in capsys.readouterr().err
