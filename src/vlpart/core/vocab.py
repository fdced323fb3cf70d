"""Vocabularies: built-in taxonomies, ``object:part`` specs, prompt templates, granularity.

A category is an *object* (``dog``) or an *object part* (``dog:head``). A :class:`Vocabulary` is an
ordered tuple of categories; row ``i`` of its text-embedding matrix is category ``i``.

Specs accepted by :func:`parse_vocabulary` (and ``--vocab`` on the command line):

* a built-in taxonomy: ``pascal_part``, ``partimagenet``, ``paco``, ``voc``, ``coco``, ``lvis``,
  and the OV-PARTS benchmarks ``pascal_part_116`` and ``ade20k_part_234`` (their ``"dog's head"``
  is ``dog:head`` here; row ``i`` is label value ``i`` of their PNGs; seen = ``base``);
* entries separated by ``;`` or new lines, each one of
  ``dog`` (an object; ``dog,cat`` is two objects),
  ``dog:head,torso,leg,tail`` (parts of an object: the granularity the user asks for),
  ``dog:*`` (every part of ``dog`` a built-in taxonomy knows);
* a path to a text file holding such entries (``#`` starts a comment).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from vlpart.core.errors import InputError, UnknownNameError
from vlpart.core.fileio import read_text_file

__all__ = [
    "BUILTIN_VOCABULARIES",
    "PROMPT_TEMPLATES",
    "DEFAULT_TEMPLATE",
    "GRANULARITIES",
    "Category",
    "Vocabulary",
    "at_granularity",
    "load_builtin",
    "name_key",
    "parse_vocabulary",
    "pascal_part_mat_tokens",
    "prompt_template",
    "split_category_name",
]

logger = logging.getLogger(__name__)

BUILTIN_VOCABULARIES = (
    "pascal_part",
    "partimagenet",
    "paco",
    "voc",
    "coco",
    "lvis",
    "pascal_part_116",
    "ade20k_part_234",
)
# Order in which ``obj:*`` looks up the parts of an object.
_PART_TAXONOMIES = ("pascal_part", "partimagenet", "paco")

# Part prompt templates (the paper's default first, its ablation second); objects alone always
# use OBJECT_TEMPLATE.
PROMPT_TEMPLATES = {
    "a_object_part": "a {object} {part}",
    "part_of_object": "{part} of a {object}",
}
DEFAULT_TEMPLATE = "a_object_part"
OBJECT_TEMPLATE = "a {object}"

SPLITS = ("base", "novel")

# Levels of :func:`at_granularity`, coarse to fine.
GRANULARITIES = ("objects", "parts", "every_part")


@dataclass(frozen=True)
class Category:
    """One row of a vocabulary.

    Attributes:
        name: display name, as the dataset spells it (``dog:head``, ``Quadruped Head``, ``dog``).
        object: the object this category is or belongs to (``dog``).
        part: the part name, or ``None`` for an object category.
        id: the dataset's category id (built-in taxonomies) or the 1-based position (user specs).
        split: ``"base"``, ``"novel"`` or ``None`` when the taxonomy has no split.
        image_count: training images containing it (LVIS/PACO; federated loss weights), or None.
        object_text: how the object is written in prompts (defaults to ``object.lower()``).
    """

    name: str
    object: str
    part: str | None = None
    id: int = 0
    split: str | None = None
    image_count: int | None = None
    object_text: str | None = None

    @property
    def is_part(self) -> bool:
        return self.part is not None

    def prompt(self, template: str = DEFAULT_TEMPLATE) -> str:
        """The text fed to the text encoder, e.g. ``"a dog head"``."""
        obj = self.object_text or self.object.lower()
        if self.part is None:
            return OBJECT_TEMPLATE.format(object=obj)
        return prompt_template(template).format(object=obj, part=self.part.lower())


@dataclass(frozen=True)
class Vocabulary(Sequence[Category]):
    """An ordered, duplicate-free tuple of categories with a name (the spec it came from)."""

    categories: tuple[Category, ...]
    name: str = "custom"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for i, cat in enumerate(self.categories):
            key = name_key(cat.name)
            if key in index:
                raise InputError(f"vocabulary {self.name!r}: category {cat.name!r} appears twice")
            index[key] = i
        if not index:
            raise InputError(f"vocabulary {self.name!r} is empty")
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, i):  # type: ignore[override]
        return self.categories[i]

    def __iter__(self) -> Iterator[Category]:
        return iter(self.categories)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name_key(name) in self._index

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def objects(self) -> list[str]:
        """Distinct object names, in order of first appearance."""
        return list(dict.fromkeys(c.object for c in self.categories))

    def index(self, name: str) -> int:  # type: ignore[override]
        """Row of category ``name`` (case-insensitive); raises ``KeyError`` with close matches."""
        try:
            return self._index[name_key(name)]
        except KeyError:
            raise UnknownNameError(
                f"{name!r} is not in vocabulary {self.name!r}{_suggest(name, self.names)}"
            ) from None

    def prompts(self, template: str = DEFAULT_TEMPLATE) -> list[str]:
        return [c.prompt(template) for c in self.categories]

    def split_mask(self, split: str) -> list[bool]:
        """Per-category flag: is it in ``split`` (``"base"`` or ``"novel"``)?"""
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [c.split == split for c in self.categories]

    def counts(self) -> dict[str, int]:
        """How many categories, objects, parts, base and novel categories it holds."""
        return {
            "categories": len(self),
            "objects": len(self.objects),
            "parts": sum(c.is_part for c in self.categories),
            "base": sum(self.split_mask("base")),
            "novel": sum(self.split_mask("novel")),
        }

    def subset(
        self,
        *,
        split: str | None = None,
        objects: Sequence[str] | None = None,
        parts_only: bool = False,
    ) -> Vocabulary:
        """Categories of one split and/or of some objects, keeping order."""
        keep = list(self.categories)
        if split is not None:
            mask = self.split_mask(split)
            keep = [c for c, m in zip(self.categories, mask, strict=True) if m]
        if objects is not None:
            wanted = {o.lower() for o in objects}
            keep = [c for c in keep if c.object.lower() in wanted]
        if parts_only:
            keep = [c for c in keep if c.is_part]
        suffix = ",".join(filter(None, [split, *(objects or [])]))
        return Vocabulary(tuple(keep), name=f"{self.name}[{suffix}]" if suffix else self.name)

    def to_json(self) -> list[dict]:
        """Plain records (for checkpoint sidecars and result files)."""
        return [{k: v for k, v in vars(c).items() if v is not None} for c in self.categories]

    @classmethod
    def from_json(cls, records: Sequence[dict], name: str = "custom") -> Vocabulary:
        return cls(tuple(Category(**r) for r in records), name=name)


def name_key(name: str) -> str:
    """The one name normaliser: lower case, with ``:``, ``_`` and runs of blanks all one space,
    so ``Dog:Head``, ``dog head`` and ``dog_head`` are one category everywhere (vocabulary
    look-ups, evaluation splits, dataset categories)."""
    return re.sub(r"[\s:_]+", " ", name.lower()).strip()


def split_category_name(name: str, supercategory: str | None = None) -> tuple[str, str | None]:
    """The one ``object:part`` rule: ``(object, part)`` of a category name, ``part=None`` for an
    object.

    ``"dog:head"`` is part ``head`` of ``dog``; so is a name that starts with its
    ``supercategory`` and a blank (PartImageNet's ``"Quadruped Head"`` of ``"Quadruped"``),
    and a name that a built-in part taxonomy lists as a part (``"Quadruped Head"`` without a
    supercategory). Anything else is an object.
    """
    obj, sep, part = name.partition(":")
    if sep:
        return obj.strip(), part.strip()
    if supercategory and name.startswith(supercategory + " "):
        return supercategory.strip(), name[len(supercategory) + 1 :].strip()
    known = _known_part_names().get(name_key(name))
    if known is not None:
        return known.object, known.part
    return name.strip(), None


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in candidates], n=3)
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?" if close else ""


def prompt_template(name: str) -> str:
    """The format string of a template: a name of :data:`PROMPT_TEMPLATES` or a string whose
    only fields are ``{object}`` and ``{part}`` (each at least once).

    Raises:
        ValueError: an unknown name, or a string with other fields (``{0}``, ``{obj}``), a
            format spec or unbalanced braces.
    """
    if name in PROMPT_TEMPLATES:
        return PROMPT_TEMPLATES[name]
    if "{" not in name and "}" not in name:
        raise InputError(
            f"unknown prompt template {name!r}{_suggest(name, list(PROMPT_TEMPLATES))} "
            f"(choices: {', '.join(PROMPT_TEMPLATES)}, or a string with {{object}} and {{part}})"
        )
    try:
        fields = [
            (key, spec, conversion)
            for _, key, spec, conversion in string.Formatter().parse(name)
            if key is not None
        ]
    except ValueError as err:
        raise InputError(f"prompt template {name!r}: {err} (write a literal brace twice)") from None
    for key, spec, conversion in fields:
        if key not in ("object", "part") or spec or conversion:
            conv = f"!{conversion}" if conversion else ""
            shown = "{" + key + conv + (f":{spec}" if spec else "") + "}"
            raise InputError(
                f"prompt template {name!r}: {shown} is not allowed; the only fields are "
                "{object} and {part}"
            )
    missing = {"object", "part"} - {f for f, _, _ in fields}
    if missing:
        raise InputError(
            f"prompt template {name!r} lacks {' and '.join('{' + m + '}' for m in sorted(missing))}"
        )
    return name


@cache
def _taxonomy_json(name: str) -> dict:
    if name not in BUILTIN_VOCABULARIES:
        raise InputError(
            f"unknown vocabulary {name!r}{_suggest(name, BUILTIN_VOCABULARIES)} "
            f"(built in: {', '.join(BUILTIN_VOCABULARIES)})"
        )
    text = resources.files("vlpart").joinpath(f"_resources/taxonomies/{name}.json").read_text()
    return json.loads(text)


def pascal_part_mat_tokens() -> dict[str, str]:
    """Pascal-Part category name -> the token that raw ``.mat`` part labels are matched by.

    A raw label (``lfleg``, ``lfpa``, ``fliplate``) belongs to the first category of its object,
    in id order, whose token is a substring of it; the token is the part name unless listed here
    otherwise (``paw`` -> ``pa``, ``license plate`` -> ``liplate``).
    """
    return {
        c["name"]: c["mat_token"] or c["part"] for c in _taxonomy_json("pascal_part")["categories"]
    }


@cache
def load_builtin(name: str) -> Vocabulary:
    """One of :data:`BUILTIN_VOCABULARIES`, with its dataset ids, splits and image counts."""
    data = _taxonomy_json(name)
    phrases = data["phrases"]
    cats = tuple(
        Category(
            name=c["name"],
            object=c["object"],
            part=c["part"],
            id=c["id"],
            split=c["split"],
            image_count=c["image_count"],
            object_text=phrases.get(c["object"]),
        )
        for c in data["categories"]
    )
    return Vocabulary(cats, name=name)


@cache
def _known_parts() -> dict[str, list[Category]]:
    """Object name (lower case) -> its part categories in the first taxonomy that has it."""
    parts: dict[str, list[Category]] = {}
    for tax in _PART_TAXONOMIES:
        found: dict[str, list[Category]] = {}
        for cat in load_builtin(tax):
            if cat.is_part:
                found.setdefault(cat.object.lower(), []).append(cat)
        for obj, cats in found.items():
            parts.setdefault(obj, cats)
    return parts


@cache
def _known_part_names() -> dict[str, Category]:
    """Name key -> the part category of that name in the first part taxonomy that lists it."""
    found: dict[str, Category] = {}
    for tax in _PART_TAXONOMIES:
        for cat in load_builtin(tax):
            if cat.is_part:
                found.setdefault(name_key(cat.name), cat)
    return found


@cache
def _known_words() -> set[str]:
    words: set[str] = set()
    for tax in BUILTIN_VOCABULARIES:
        for cat in load_builtin(tax):
            words.add(cat.object.lower())
            if cat.part:
                words.add(cat.part.lower())
    return words


def _warn_if_typo(word: str, spec: str) -> None:
    """Open vocabulary accepts any word, but a near miss of a known name is probably a typo."""
    if word.lower() in _known_words():
        return
    close = difflib.get_close_matches(word.lower(), sorted(_known_words()), n=1, cutoff=0.66)
    if close:
        logger.warning("%r in %r is not a known name; did you mean %r?", word, spec, close[0])


def _parse_entries(spec: str, source: str) -> list[Category]:
    cats: list[Category] = []
    lines = [line.split("#", 1)[0] for line in spec.splitlines()]
    entries = [e.strip() for line in lines for e in line.split(";")]
    for entry in filter(None, entries):
        if ":" not in entry:
            for obj in filter(None, (o.strip() for o in entry.split(","))):
                _warn_if_typo(obj, source)
                cats.append(Category(name=obj, object=obj))
            continue
        obj, _, part_list = (s.strip() for s in entry.partition(":"))
        if not obj:
            raise InputError(f"{source}: entry {entry!r} has no object before ':'")
        parts = [p.strip() for p in part_list.split(",") if p.strip()]
        if not parts:
            raise InputError(
                f"{source}: entry {entry!r} names no parts; write {obj}:head,leg or {obj}:*"
            )
        if parts == ["*"]:
            known = _known_parts()
            if obj.lower() not in known:
                raise InputError(
                    f"{source}: no built-in taxonomy has parts of {obj!r}"
                    f"{_suggest(obj, sorted(known))}; list its parts, e.g. {obj}:head,body"
                )
            # The taxonomy's base/novel split travels with its parts.
            cats.extend(
                Category(name=f"{obj}:{c.part}", object=obj, part=c.part, split=c.split)
                for c in known[obj.lower()]
            )
            continue
        _warn_if_typo(obj, source)
        for part in parts:
            if part == "*":
                raise InputError(f"{source}: '*' must be the only part in {entry!r}")
            _warn_if_typo(part, source)
            cats.append(Category(name=f"{obj}:{part}", object=obj, part=part))
    unique: dict[str, Category] = {}
    for c in cats:  # the first occurrence of a name wins
        unique.setdefault(name_key(c.name), c)
    return [dataclasses.replace(c, id=i + 1) for i, c in enumerate(unique.values())]


def parse_vocabulary(spec: str | Path | Vocabulary) -> Vocabulary:
    """Turn a spec (built-in name, entries, or a file of entries) into a :class:`Vocabulary`.

    Duplicate entries are merged (first occurrence wins the position).

    Raises:
        ValueError: unknown built-in name (with close matches), malformed entry, ``obj:*`` for an
            object no taxonomy knows, or an empty spec.
        FileNotFoundError: ``spec`` names a ``.txt`` file that does not exist.
    """
    if isinstance(spec, Vocabulary):
        return spec
    text = str(spec).strip()
    if text in BUILTIN_VOCABULARIES:
        return load_builtin(text)
    path = Path(text)
    if isinstance(spec, Path) or text.endswith((".txt", ".vocab")):
        cats = _parse_entries(read_text_file(path, "vocabulary"), str(path))
        if not cats:
            raise InputError(f"{path}: vocabulary file has no entries")
        return Vocabulary(tuple(cats), name=path.stem)
    if not text:
        raise InputError("empty vocabulary; give e.g. 'dog:head,torso' or 'pascal_part'")
    is_plain_word = all(ch.isalnum() or ch == "_" for ch in text)
    if "_" in text and is_plain_word:  # looks like a taxonomy name, not an object
        raise InputError(
            f"unknown vocabulary {text!r}{_suggest(text, BUILTIN_VOCABULARIES)} "
            f"(built in: {', '.join(BUILTIN_VOCABULARIES)})"
        )
    close_builtin = difflib.get_close_matches(text, BUILTIN_VOCABULARIES, n=1, cutoff=0.85)
    if is_plain_word and close_builtin and text.lower() not in _known_words():
        raise InputError(f"unknown vocabulary {text!r}; did you mean {close_builtin[0]!r}?")
    return Vocabulary(tuple(_parse_entries(text, repr(text))), name=text)


def at_granularity(vocabulary: Vocabulary, granularity: str) -> Vocabulary:
    """The objects of ``vocabulary`` at one level of :data:`GRANULARITIES`.

    * ``objects`` (coarse): its objects only (``dog:head,leg`` -> ``dog``);
    * ``parts`` (medium): each object, followed by the parts the vocabulary names
      (``dog:head,leg`` -> ``dog; dog:head; dog:leg``);
    * ``every_part`` (fine): each object, followed by the parts it names and every part a
      built-in taxonomy knows of it, as ``dog:*`` gives them.

    The objects stay in the finer levels so that parts are linked to the object instance they
    lie in (:attr:`vlpart.Prediction.parent`). Ids are the 1-based positions; parts keep their
    base/novel split (the taxonomy's for added parts), objects have none.

    Raises:
        ValueError: an unknown level, or ``every_part`` for objects no built-in taxonomy knows.
    """
    if granularity not in GRANULARITIES:
        raise InputError(
            f"unknown granularity {granularity!r}{_suggest(granularity, GRANULARITIES)} "
            f"(choices: {', '.join(GRANULARITIES)})"
        )
    groups: dict[str, list[Category]] = {}
    for cat in vocabulary:
        group = groups.setdefault(cat.object.lower(), [])
        if not group:
            group.append(Category(name=cat.object, object=cat.object, object_text=cat.object_text))
        if cat.is_part and granularity != "objects":
            group.append(cat)
    if granularity == "every_part":
        known = _known_parts()
        unknown = [g[0].name for key, g in groups.items() if key not in known]
        if unknown:
            names = ", ".join(repr(n) for n in unknown)
            raise InputError(
                f"no built-in taxonomy has parts of {names}; name them, e.g. {unknown[0]}:head,body"
            )
        for key, group in groups.items():
            obj = group[0]
            group.extend(
                Category(
                    name=f"{obj.name}:{c.part}",
                    object=obj.name,
                    part=c.part,
                    split=c.split,
                    object_text=obj.object_text,
                )
                for c in known[key]
            )
    unique: dict[str, Category] = {}  # the first of equal names wins (a typed part)
    for group in groups.values():
        for cat in group:
            unique.setdefault(name_key(cat.name), cat)
    return Vocabulary(
        tuple(dataclasses.replace(c, id=i + 1) for i, c in enumerate(unique.values())),
        name=f"{vocabulary.name}@{granularity}",
    )
