"""Categories and taxonomies: the :class:`Category` and :class:`Vocabulary` records, the one
``object:part`` rule and name normaliser, prompt templates, the built-in taxonomies and
granularity levels. Specs as users type them are read by :mod:`vlpart.core.vocab`."""

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

from vlpart.core.errors import InputError, UnknownNameError

__all__ = [
    "BUILTIN_VOCABULARIES",
    "PROMPT_TEMPLATES",
    "DEFAULT_TEMPLATE",
    "GRANULARITIES",
    "MAX_CATEGORIES",
    "Category",
    "Vocabulary",
    "at_granularity",
    "load_builtin",
    "name_key",
    "pascal_part_mat_tokens",
    "prompt_template",
    "split_category_name",
]

logger = logging.getLogger(__name__)

BUILTIN_VOCABULARIES = ("pascal_part", "partimagenet", "paco", "voc", "coco", "lvis")
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

# Most categories a spec may give (LVIS, the largest built-in vocabulary, has 1,203): a ``*``
# entry over many objects is a slip, and a text encoder would take minutes on it.
MAX_CATEGORIES = 2000


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
        entry: the spec entry as typed when the category was rewritten or expanded from it
            (``dog's head``, ``*:head``, ``dog:*``), else None; not saved by
            :meth:`Vocabulary.to_json` and not compared.
    """

    name: str
    object: str
    part: str | None = None
    id: int = 0
    split: str | None = None
    image_count: int | None = None
    object_text: str | None = None
    entry: str | None = field(default=None, compare=False)

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
        return [
            {k: v for k, v in vars(c).items() if v is not None and k != "entry"}
            for c in self.categories
        ]

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
