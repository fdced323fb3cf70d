"""Vocabulary entries as people type them: bare part names, ``*`` expansion, plurals,
possessives, and the errors of the forms that find nothing."""

import json
import logging

import numpy as np
import pytest

from vlpart.core.taxonomy import _PART_TAXONOMIES
from vlpart.core.vocab import MAX_CATEGORIES, Vocabulary, load_builtin, parse_vocabulary
from vlpart.core.vocab_normalize import normalize_item, singular
from vlpart.text.precomputed import PrecomputedTextEncoder

LOGGER = "vlpart.core.vocab_normalize"


def parts_of(obj: str) -> list[str]:
    return [c.part for c in load_builtin("pascal_part") if c.object == obj]


def test_bare_part_is_that_part_of_every_known_object():
    vocab = parse_vocabulary("head")
    assert vocab.names == parse_vocabulary("*:head").names
    # Objects in the order the part taxonomies first list them (Pascal-Part's, PartImageNet's,
    # PACO's); each part from the first taxonomy that has it (Pascal-Part's aeroplane has no
    # head, PartImageNet's has), spelled as it spells it.
    assert vocab.names[:14] == [
        "Aeroplane:Head",
        "Bicycle:Head",
        "bird:head",
        "cat:head",
        "cow:head",
        "dog:head",
        "horse:head",
        "person:head",
        "sheep:head",
        "Quadruped:Head",
        "Biped:Head",
        "Fish:Head",
        "Snake:Head",
        "Reptile:Head",
    ]
    assert vocab.prompts()[:4] == [
        "a aeroplane head",
        "a bicycle head",
        "a bird head",
        "a cat head",
    ]
    # ... and PACO's: every object of the part taxonomies that has a head, once.
    owners = {
        c.object.lower()
        for tax in _PART_TAXONOMIES
        for c in load_builtin(tax)
        if c.part and c.part.lower() == "head"
    }
    assert len(vocab) == len(owners)
    assert {c.object.lower() for c in vocab} == owners
    assert {"hammer:head", "wrench:head"} <= set(vocab.names)
    assert all(c.part.lower() == "head" and c.entry == "head" for c in vocab)
    # The taxonomy's split travels with the parts (Pascal-Part's dog is novel).
    assert vocab[vocab.index("dog:head")].split == "novel"
    assert vocab[vocab.index("cat:head")].split == "base"


def test_star_over_the_listed_objects():
    vocab = parse_vocabulary("dog;cat;*:head")
    assert vocab.names == ["dog", "cat", "dog:head", "cat:head"]
    assert vocab.prompts() == ["a dog", "a cat", "a dog head", "a cat head"]
    assert [c.split for c in vocab] == [None, None, "novel", "base"]
    assert [c.entry for c in vocab] == [None, None, "*:head", "*:head"]
    # Several parts: grouped by object, in the order named.
    assert parse_vocabulary("dog; cat; *:head,leg").names == [
        "dog",
        "cat",
        "dog:head",
        "dog:leg",
        "cat:head",
        "cat:leg",
    ]
    # Objects listed after the star, or only through their parts, count too.
    assert parse_vocabulary("*:tail; dog").names == ["dog:tail", "dog"]
    assert parse_vocabulary("dog:head; *:tail").names == ["dog:head", "dog:tail"]
    # A named part is looked up in every part taxonomy (PartImageNet's aeroplane has a head).
    vocab = parse_vocabulary("aeroplane; *:head")
    assert vocab.names == ["aeroplane", "aeroplane:Head"]
    assert vocab.prompts() == ["a aeroplane", "a aeroplane head"]
    # An object without that part is left out (bus has no head), so are unknown ones.
    assert parse_vocabulary("dog; bus; giraffe; *:head").names == [
        "dog",
        "bus",
        "giraffe",
        "dog:head",
    ]


def test_star_star_is_every_part():
    assert parse_vocabulary("dog; *:*").names == ["dog", *(f"dog:{p}" for p in parts_of("dog"))]
    assert parse_vocabulary("cat; *:*").names == parse_vocabulary("cat; cat:*").names
    everything = parse_vocabulary("*:*")
    assert all(c.is_part for c in everything)
    assert {f"dog:{p}" for p in parts_of("dog")} <= set(everything.names)
    assert "Quadruped:Tail" in everything and "chair:seat" in everything
    assert len(everything) > 500


def test_star_prompts_are_the_released_ones(shared_data):
    """Every category a ``*`` can give is a category of a part taxonomy, prompt and all, so the
    released CLIP embeddings of those taxonomies cover it."""
    ref = json.loads((shared_data / "taxonomies" / "pascal_part.json").read_text())
    released = {c["prompt"] for c in ref["categories"]}
    for name in ("partimagenet.json", "paco.json"):
        data = json.loads((shared_data / "taxonomies" / name).read_text())
        released |= {c["prompt"] for c in data.get("categories", data.get("object_parts"))}
    assert set(parse_vocabulary("*:*").prompts()) <= released


@pytest.mark.parametrize(
    ("typed", "names", "prompts"),
    [
        ("legs", None, None),  # checked against *:leg below
        ("dog:legs", ["dog:leg"], ["a dog leg"]),
        ("dogs:legs", ["dog:leg"], ["a dog leg"]),
        ("person:hands,feet", ["person:hand", "person:foot"], ["a person hand", "a person foot"]),
        ("Dogs", ["dog"], ["a dog"]),
        ("dog's head", ["dog:head"], ["a dog head"]),
        ("dogs' heads", ["dog:head"], ["a dog head"]),
        ("dog\u2019s tail", ["dog:tail"], ["a dog tail"]),
        ("head of a dog", ["dog:head"], ["a dog head"]),
        ("the head of the dog", ["dog:head"], ["a dog head"]),
        ("Legs of the Dogs", ["dog:leg"], ["a dog leg"]),
        ("Dog Head", ["Dog:Head"], ["a dog head"]),
        ("dog heads", ["dog:head"], ["a dog head"]),
        ("Quadruped Head", ["Quadruped:Head"], ["a quadruped head"]),
        ("car license plates", ["car:license plate"], ["a car license plate"]),
        ("giraffe head", ["giraffe:head"], ["a giraffe head"]),  # open vocabulary object
        ("a dog", ["dog"], ["a dog"]),
        ("mice", ["mouse"], ["a mouse"]),
        ("teeth", ["dog:teeth"], ["a dog teeth"]),  # PACO's dog (not Pascal-Part's) has teeth
    ],
)
def test_rewritten_forms(typed, names, prompts, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        vocab = parse_vocabulary(typed)
    if names is None:
        assert vocab.names == parse_vocabulary("*:leg").names
        assert "dog:leg" in vocab
    else:
        assert vocab.names == names
        assert vocab.prompts() == prompts
    assert all(c.entry == typed for c in vocab)
    # One warning line says what was read.
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert f"read {typed!r} as " in record.getMessage()


def test_quadruped_head_is_the_partimagenet_category():
    vocab = parse_vocabulary("Quadruped Head")
    pim = load_builtin("partimagenet")
    assert vocab[0].is_part and vocab[0].object == "Quadruped"
    assert vocab.prompts() == [pim[pim.index("Quadruped Head")].prompt()]
    assert vocab.prompts("part_of_object") == ["head of a quadruped"]


@pytest.mark.parametrize(
    "typed",
    [
        "dog",
        "dog:head,leg",
        "scissors",  # a plural-looking object name
        "antlers",  # unknown words stay as typed
        "wheel",  # an object (LVIS) as well as a part: stays the object
        "glasses",
        "cup of tea",  # 'of' without an article
        "tennis racket",
    ],
)
def test_names_left_as_typed(typed, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        vocab = parse_vocabulary(typed)
    assert vocab.names == [n.strip() for n in typed.split(",")] if ":" not in typed else True
    assert all(c.entry is None for c in vocab)
    assert "read " not in caplog.text


def test_one_warning_for_all_rewrites_and_info_for_expansions(caplog):
    spec = "dog; cat; legs; dog's tail; *:head"
    with caplog.at_level(logging.INFO, logger=LOGGER):
        vocab = parse_vocabulary(spec)
    assert vocab.names == ["dog", "cat", "dog:leg", "cat:leg", "dog:tail", "dog:head", "cat:head"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{spec!r}: read 'legs' as '*:leg', \"dog's tail\" as 'dog:tail' "
        "(`vlpart vocab show` prints the prompts)"
    ]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        f"{spec!r}: 'legs' gives 2: dog:leg, cat:leg",
        f"{spec!r}: '*:head' gives 2: dog:head, cat:head",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        parse_vocabulary("dog; cat:head,leg; dog:*")
    assert caplog.text == ""


def test_entry_is_neither_saved_nor_compared():
    vocab = parse_vocabulary("dog; *:head")
    records = vocab.to_json()
    assert all("entry" not in r for r in records)
    assert Vocabulary.from_json(records, name=vocab.name) == vocab


def test_normalize_item_and_singular():
    objects, parts = {"dog", "scissors", "potted plant"}, {"head", "leg", "license plate", "teeth"}
    assert normalize_item("dogs'  heads", objects=objects, parts=parts) == "dog:head"
    assert normalize_item("potted  plant", objects=objects, parts=parts) == "potted plant"
    assert normalize_item("heads", objects=objects, parts=parts) == "*:head"
    assert normalize_item("owl", objects=objects, parts=parts) == "owl"
    assert singular("license plates", parts) == "license plate"
    assert singular("teeth", parts) == "teeth"  # a known name as it is
    assert singular("feet", parts) == "foot"  # irregular: always
    assert singular("antlers", parts) == "antlers"  # unknown singular: kept
    assert singular("Legs", parts) == "leg"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "dog; *:wing",
            "'dog; *:wing': '*:wing': the built-in taxonomies know no 'wing' of dog ('wing' is a "
            "part of aeroplane, bird); name the parts instead, e.g. dog:wing",
        ),
        (
            "giraffe; *:*",
            "'giraffe; *:*': '*:*': the built-in taxonomies know no parts of giraffe; name the "
            "parts instead, e.g. giraffe:head,body",
        ),
        (
            "*:wnig",
            "'*:wnig': no built-in taxonomy has a part 'wnig'; did you mean 'wing' or 'lining'?; "
            "name its object, e.g. dog:wnig",
        ),
        ("dog; *:head,wnig", "know no 'wnig' of dog; did you mean 'wing'"),
        ("*", "'*' alone names nothing; write *:head"),
        ("*:head,*", "'*' must be the only part"),
    ],
)
def test_expansions_that_find_nothing(spec, message):
    with pytest.raises(ValueError) as err:
        parse_vocabulary(spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_too_many_categories(tmp_path, monkeypatch):
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"thing{i}" for i in range(MAX_CATEGORIES + 1)))
    with pytest.raises(ValueError, match=f"many.txt gives {MAX_CATEGORIES + 1} categories, more"):
        parse_vocabulary(path)
    # A long spec is named by its start, so the message stays one short line.
    spec = "; ".join(f"thing{i}" for i in range(MAX_CATEGORIES + 1))
    with pytest.raises(ValueError) as err:
        parse_vocabulary(spec)
    assert str(err.value) == (
        f"'thing0; thing1; thing2; thing3; thing4; thing5; thing6; t...' gives "
        f"{MAX_CATEGORIES + 1} categories, more than {MAX_CATEGORIES}; name fewer objects or "
        "parts (a '*' entry gives every one the taxonomies know)"
    )
    # The limit counts what a star gives; a spec at the limit is fine.
    monkeypatch.setattr("vlpart.core.vocab_normalize.MAX_CATEGORIES", 11)
    assert len(parse_vocabulary("dog; dog:*")) == 11
    with pytest.raises(ValueError, match="gives 12 categories, more than 11"):
        parse_vocabulary("dog; dog:*; dog:saddle")


def test_rewritten_specs_use_the_released_embeddings(shared_data):
    """A spec typed loosely gives the prompts of the built-in categories, so the released CLIP
    rows of those categories embed it."""
    npy = shared_data / "vlpart_metadata" / "pascal_part_clip_RN50_a+cname.npy"
    pascal = load_builtin("pascal_part")
    encoder = PrecomputedTextEncoder.from_npy(npy, pascal.prompts())
    vocab = parse_vocabulary("dogs' heads; head of a cat; Dog Legs; cat:ears")
    assert vocab.names == ["dog:head", "cat:head", "Dog:leg", "cat:ear"]
    rows = np.load(npy)[[pascal.index(n) for n in ("dog:head", "cat:head", "dog:leg", "cat:ear")]]
    expected = encoder.encode([pascal[pascal.index(n)].prompt() for n in vocab.names]).numpy()
    np.testing.assert_array_equal(encoder.encode(vocab.prompts()).numpy(), expected)
    # ... which are the released rows (the encoder hands them out normalised).
    rows = rows.astype(np.float32) / np.linalg.norm(rows.astype(np.float32), axis=1, keepdims=True)
    np.testing.assert_allclose(expected, rows, atol=1e-6)
