import json
import logging

import numpy as np
import pytest

from vlpart.core.vocab import (
    BUILTIN_VOCABULARIES,
    PROMPT_TEMPLATES,
    Vocabulary,
    at_granularity,
    load_builtin,
    parse_vocabulary,
    pascal_part_mat_tokens,
)


def test_pascal_part_matches_shared_taxonomy(shared_data):
    ref = json.loads((shared_data / "taxonomies" / "pascal_part.json").read_text())
    vocab = load_builtin("pascal_part")
    assert len(vocab) == 93
    assert vocab.names == [c["name"] for c in sorted(ref["categories"], key=lambda c: c["id"])]
    assert [c.id for c in vocab] == list(range(1, 94))
    assert sum(vocab.split_mask("base")) == 77
    novel = vocab.subset(split="novel")
    assert len(novel) == 16
    assert set(novel.objects) == {"bus", "dog"}
    # The released embeddings were computed from exactly these prompts.
    assert vocab.prompts() == [c["prompt"] for c in ref["categories"]]


@pytest.mark.parametrize(
    ("name", "file", "key", "count"),
    [
        ("partimagenet", "partimagenet.json", "categories", 40),
        ("voc", "voc_lvis.json", "voc", 20),
        ("lvis", "voc_lvis.json", "lvis_v1", 1203),
    ],
)
def test_builtin_names_follow_shared_lists(shared_data, name, file, key, count):
    ref = json.loads((shared_data / "taxonomies" / file).read_text())[key]
    vocab = load_builtin(name)
    assert len(vocab) == count
    assert vocab.names == [c["name"] for c in sorted(ref, key=lambda c: c["id"])]


def test_paco_objects_then_parts(shared_data):
    ref = json.loads((shared_data / "taxonomies" / "paco.json").read_text())
    vocab = load_builtin("paco")
    assert len(vocab) == 531
    assert sum(not c.is_part for c in vocab) == 75
    assert sum(c.is_part for c in vocab) == 456
    assert vocab[75].name == "car_(automobile):antenna"
    assert vocab.prompts()[75] == "a car_(automobile) antenna"
    counts = {c["name"]: c["image_count"] for c in ref["objects"] + ref["object_parts"]}
    assert all(c.image_count == counts[c.name] for c in vocab)


def test_partimagenet_and_voc_prompts():
    pim = load_builtin("partimagenet")
    assert pim[0].name == "Quadruped Head"
    assert pim.prompts()[0] == "a quadruped head"
    assert len(pim.objects) == 11
    voc = load_builtin("voc")
    assert "a potted plant" in voc.prompts()
    assert len(load_builtin("coco")) == 80


def test_all_builtins_load():
    for name in BUILTIN_VOCABULARIES:
        vocab = load_builtin(name)
        assert len(vocab) == len(set(vocab.names))


def test_spec_entries_and_granularity():
    vocab = parse_vocabulary("dog; cat:head,ear")
    assert vocab.names == ["dog", "cat:head", "cat:ear"]
    assert vocab.prompts() == ["a dog", "a cat head", "a cat ear"]
    assert [c.is_part for c in vocab] == [False, True, True]
    assert [c.id for c in vocab] == [1, 2, 3]
    coarse = parse_vocabulary("dog")
    medium = parse_vocabulary("dog:head,torso,leg,tail")
    fine = parse_vocabulary("dog:*")
    assert len(coarse) == 1 and len(medium) == 4
    assert set(medium.names) < set(fine.names)
    assert fine.names == [c.name for c in load_builtin("pascal_part") if c.object == "dog"]
    assert parse_vocabulary("dog, cat").names == ["dog", "cat"]
    assert parse_vocabulary("dog:head; dog:head; dog").names == ["dog:head", "dog"]


def test_star_falls_back_to_other_taxonomies():
    # PartImageNet knows "Quadruped"; PACO knows "chair".
    assert parse_vocabulary("quadruped:*").names == [
        "quadruped:Head",
        "quadruped:Body",
        "quadruped:Foot",
        "quadruped:Tail",
    ]
    chair = parse_vocabulary("chair:*")
    assert "chair:seat" in chair and len(chair) > 5


def test_templates():
    vocab = parse_vocabulary("dog:head; dog")
    assert vocab.prompts("part_of_object") == ["head of a dog", "a dog"]
    assert vocab.prompts("the {part} of the {object}") == ["the head of the dog", "a dog"]
    assert set(PROMPT_TEMPLATES) == {"a_object_part", "part_of_object"}
    with pytest.raises(ValueError, match="did you mean 'part_of_object'"):
        vocab.prompts("part_of_objet")


def test_vocabulary_file(tmp_path):
    path = tmp_path / "animals.txt"
    path.write_text("# my parts\ndog:head,tail\ncat  # just the object\n\n")
    vocab = parse_vocabulary(str(path))
    assert vocab.names == ["dog:head", "dog:tail", "cat"]
    assert vocab.name == "animals"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        parse_vocabulary(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pascal_prt", "did you mean 'pascal_part'"),
        ("partimagnet", "did you mean 'partimagenet'"),
        ("dgo:*", "did you mean 'dog'"),
        ("dog:", "names no parts"),
        (":head", "no object"),
        ("dog:head,*", "must be the only part"),
        ("", "empty vocabulary"),
        (" ; ", "is empty"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_vocabulary(spec)


def test_typo_in_free_text_warns_but_stays_open(caplog):
    with caplog.at_level(logging.WARNING, logger="vlpart.core.vocab"):
        vocab = parse_vocabulary("dgo:head")
    assert vocab.names == ["dgo:head"]  # open vocabulary: any word is allowed
    assert "did you mean 'dog'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vlpart.core.vocab"):
        parse_vocabulary("giraffe:head,neck")
    assert caplog.text == ""


def test_index_and_subset():
    vocab = load_builtin("pascal_part")
    assert vocab.index("Dog:Head") == vocab.names.index("dog:head")
    with pytest.raises(KeyError, match="did you mean 'dog:head'"):
        vocab.index("dog:haed")
    dogs = vocab.subset(objects=["dog"])
    assert all(c.object == "dog" for c in dogs) and len(dogs) == 10
    with pytest.raises(ValueError, match="unknown split"):
        vocab.split_mask("val")


def test_json_round_trip():
    vocab = load_builtin("pascal_part").subset(objects=["cat"])
    again = Vocabulary.from_json(vocab.to_json(), name=vocab.name)
    assert again == vocab
    assert again[0].split == "base"


def test_duplicate_categories_rejected():
    from vlpart.core.vocab import Category

    with pytest.raises(ValueError, match="appears twice"):
        Vocabulary((Category("dog", "dog"), Category("Dog", "Dog")))


def test_mat_tokens():
    tokens = pascal_part_mat_tokens()
    assert tokens["dog:paw"] == "pa"
    assert tokens["car:license plate"] == "liplate"
    assert tokens["dog:head"] == "head"
    assert len(tokens) == 93


def test_star_expansion_keeps_the_taxonomy_split():
    vocab = parse_vocabulary("dog:*; cat:*; cat:head; bird:beak")
    splits = {c.name: c.split for c in vocab}
    assert {splits[n] for n in splits if n.startswith("dog:")} == {"novel"}
    assert {splits[n] for n in splits if n.startswith("cat:")} == {"base"}
    assert splits["bird:beak"] is None  # named by the user, not expanded: no split claimed
    assert sum(vocab.split_mask("novel")) == 10


def test_granularity_levels():
    vocab = parse_vocabulary("dog:head,leg; cat; Dog:tail")
    assert at_granularity(vocab, "objects").names == ["dog", "cat"]
    # Names stay as typed; objects are grouped case-insensitively.
    assert at_granularity(vocab, "parts").names == ["dog", "dog:head", "dog:leg", "Dog:tail", "cat"]
    fine = at_granularity(vocab, "every_part")
    dog_parts = [c.name for c in load_builtin("pascal_part") if c.object == "dog"]
    cat_parts = [c.name for c in load_builtin("pascal_part") if c.object == "cat"]
    # Named parts first, then the taxonomy's others (no duplicates: dog:head, dog:leg, dog:tail).
    assert fine.names == [
        "dog",
        "dog:head",
        "dog:leg",
        "Dog:tail",
        *[n for n in dog_parts if n not in ("dog:head", "dog:leg", "dog:tail")],
        "cat",
        *cat_parts,
    ]
    assert [c.id for c in fine] == list(range(1, len(fine) + 1))
    assert fine.name == f"{vocab.name}@every_part"
    assert fine.prompts()[:2] == ["a dog", "a dog head"]
    # Added parts carry the taxonomy's split (dog is novel, cat base); typed ones keep theirs.
    splits = {c.name: c.split for c in fine}
    assert splits["dog:ear"] == "novel" and splits["cat:ear"] == "base"
    assert splits["dog:head"] is None and splits["dog"] is None


def test_granularity_of_builtins_and_errors():
    objects = at_granularity(load_builtin("pascal_part"), "objects")
    assert len(objects) == 14 and not any(c.is_part for c in objects)
    assert "a potted plant" in objects.prompts()  # the taxonomy's phrase is kept
    assert at_granularity(load_builtin("voc"), "parts").names == load_builtin("voc").names
    with pytest.raises(ValueError, match="no built-in taxonomy has parts of 'giraffe', 'kite'"):
        at_granularity(parse_vocabulary("giraffe, dog, kite"), "every_part")
    with pytest.raises(ValueError, match="unknown granularity 'part'; did you mean 'parts'"):
        at_granularity(parse_vocabulary("dog"), "part")


RELEASED = {  # built-in vocabulary -> its released CLIP RN50 embeddings
    "pascal_part": "pascal_part",
    "partimagenet": "partimagenet",
    "paco": "paco",
    "voc": "voc",
    "coco": "coco",
    "lvis": "lvis_v1",
}


def test_builtin_prompts_are_the_released_ones(shared_data):
    """The prompts of the built-in vocabularies are those the released embeddings were made
    from: the taxonomies' recorded prompts, else "a " + the raw name (the metadata notes)."""
    tax = shared_data / "taxonomies"
    pim = json.loads((tax / "partimagenet.json").read_text())["categories"]
    assert load_builtin("partimagenet").prompts() == [c["prompt"] for c in pim]
    paco = json.loads((tax / "paco.json").read_text())
    assert load_builtin("paco").prompts() == [f"a {c['name']}" for c in paco["objects"]] + [
        c["prompt"] for c in paco["object_parts"]
    ]
    # Prompts are lower case; CLIP's tokenizer lower-cases its input (LVIS's 'Band_Aid').
    lvis = json.loads((tax / "voc_lvis.json").read_text())["lvis_v1"]
    assert load_builtin("lvis").prompts() == [f"a {c['name'].lower()}" for c in lvis]
    voc = load_builtin("voc").prompts()
    assert {"a dining table", "a potted plant", "a tv monitor"} <= set(voc)  # the notes' names


def test_builtin_prompts_match_the_released_embeddings(clip_embeddings):
    """Without the CLIP weights the prompts are checked through the embeddings themselves:
    across the released files, rows of one prompt agree (cosine > 0.9999) and rows of two
    prompts never do (measured: >= 0.99998 and <= 0.981)."""
    prompts, rows = [], []
    for name, file in RELEASED.items():
        matrix = clip_embeddings(file).astype(np.float32)
        assert matrix.shape[0] == len(load_builtin(name))
        prompts += load_builtin(name).prompts()
        rows.append(matrix / np.linalg.norm(matrix, axis=1, keepdims=True))
    cos = np.concatenate(rows) @ np.concatenate(rows).T
    same = np.array(prompts)[:, None] == np.array(prompts)[None, :]
    assert same.sum() > len(prompts) + 300  # many prompts recur across the files
    assert cos[same].min() > 0.9999
    assert cos[~same].max() < 0.99
