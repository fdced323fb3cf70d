"""The OV-PARTS vocabularies: sizes, order, seen/unseen splits and prompts."""

from __future__ import annotations

from vlpart.core.vocab import BUILTIN_VOCABULARIES, load_builtin, parse_vocabulary


def test_pascal_part_116_as_ov_parts_registers_it():
    vocab = parse_vocabulary("pascal_part_116")
    assert len(vocab) == 116 and len(vocab.objects) == 16
    # Row i is label value i of the released PNGs ("aeroplane's body" is 0).
    assert vocab.names[:2] == ["aeroplane:body", "aeroplane:stern"]
    assert vocab.names[97] == "pottedplant:pot" and vocab.names[-1] == "tvmonitor:screen"
    assert [c.id for c in vocab] == list(range(1, 117))
    unseen = {c.object for c in vocab if c.split == "novel"}
    assert unseen == {"bird", "car", "dog", "sheep", "motorbike"}
    assert vocab.counts()["novel"] == 42 and vocab.counts()["base"] == 74
    assert vocab.index("person:lower arm") == 94


def test_ade20k_part_234_as_ov_parts_registers_it():
    vocab = load_builtin("ade20k_part_234")
    assert len(vocab) == 234 and len(vocab.objects) == 44
    assert vocab.names[0] == "person:arm" and vocab.names[-1] == "light:shade"
    chest = vocab[vocab.index("chest of drawers:apron")]
    assert (chest.object, chest.part) == ("chest of drawers", "apron")
    unseen = {c.object for c in vocab if c.split == "novel"}
    assert unseen == {
        "bench", "bus", "fan", "desk", "stool", "truck", "van", "swivel chair", "oven",
        "ottoman", "kitchen island",
    }  # fmt: skip
    assert vocab.counts()["novel"] == 58


def test_ov_parts_prompts_use_our_template_and_the_released_object_wording():
    vocab = load_builtin("pascal_part_116")
    assert vocab.prompts()[0] == "a aeroplane body"
    assert vocab[vocab.index("pottedplant:pot")].prompt() == "a potted plant pot"
    assert (
        vocab[vocab.index("tvmonitor:screen")].prompt("part_of_object") == "screen of a tv monitor"
    )
    # Where pascal_part (the released embeddings' vocabulary) has the same category, the
    # prompt is the one its embeddings were computed from.
    released = {
        c.name.replace("potted plant", "pottedplant"): c.prompt()
        for c in load_builtin("pascal_part")
    }
    shared = [c for c in vocab if c.name in released]
    assert len(shared) == 92  # all but person:arm (116 splits it into lower and upper arm)
    assert all(c.prompt() == released[c.name] for c in shared)


def test_ov_parts_names_are_builtin():
    assert {"pascal_part_116", "ade20k_part_234"} <= set(BUILTIN_VOCABULARIES)
