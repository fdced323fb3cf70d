"""Reading vocabulary entries as people type them: the normaliser and ``*`` expansion.

:func:`parse_entries` (behind :func:`vlpart.core.vocab.parse_vocabulary`) reads the entries of a
spec. Each item typed without ``:`` first goes through :func:`normalize_item`:

=====================  =====================  ==========================================
typed                  read as                rule
=====================  =====================  ==========================================
``legs``, ``feet``     ``*:leg``, ``*:foot``  plural of a known name (irregulars too)
``head``               ``*:head``             a part name that is no object name
``dog's head``         ``dog:head``           possessive (``dogs' heads`` too)
``head of a dog``      ``dog:head``           ``of a`` / ``of an`` / ``of the``
``Dog Head``           ``Dog:Head``           known object, then a known part name
``a dog``              ``dog``                a leading article
=====================  =====================  ==========================================

and ``dogs:legs`` is read as ``dog:leg``. Case is kept as typed (names match case-insensitively,
prompts are lower case); a word the normaliser changes is written lower case. Only names the
built-in vocabularies know are rewritten (an unknown word stays as typed: the vocabulary is
open), and a name that is also an object (``wheel``, ``handle``) stays the object. One warning
line lists the rewrites; :attr:`~vlpart.core.vocab.Category.entry` keeps what was typed.

Then ``*:head,leg`` gives those parts of each object the spec lists (in any entry), or, when it
lists none, of every object the built-in part taxonomies know; ``*:*`` gives every part of them.
Each named part must be found at least once, and a spec may give at most
:data:`~vlpart.core.vocab.MAX_CATEGORIES` categories.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import cache

from vlpart.core.errors import InputError
from vlpart.core.taxonomy import (
    _PART_TAXONOMIES,
    BUILTIN_VOCABULARIES,
    MAX_CATEGORIES,
    Category,
    _known_parts,
    _known_words,
    _suggest,
    load_builtin,
    name_key,
)

__all__ = ["IRREGULAR_PLURALS", "STAR", "normalize_item", "parse_entries", "singular"]

logger = logging.getLogger(__name__)

# The wildcard of ``*:head`` (every object) and ``dog:*`` (every part).
STAR = "*"

# English plurals that no suffix rule undoes; rewritten whether or not the taxonomies know them.
IRREGULAR_PLURALS = {
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "geese": "goose",
    "men": "man",
    "women": "woman",
    "children": "child",
    "people": "person",
    "oxen": "ox",
    "knives": "knife",
    "leaves": "leaf",
    "wolves": "wolf",
    "calves": "calf",
    "halves": "half",
    "shelves": "shelf",
    "hooves": "hoof",
}
_ARTICLE = re.compile(r"^(?:a|an|the)\s+(?=\S)", re.IGNORECASE)
_POSSESSIVE = re.compile(r"^(?P<object>.+?)(?:'s|s'|\u2019s|s\u2019)\s+(?P<part>\S.*)$")
_PART_OF = re.compile(r"^(?P<part>.+?)\s+of\s+(?:a|an|the)\s+(?P<object>\S.*)$", re.IGNORECASE)


def _singular_candidates(word: str) -> list[str]:
    """Singulars a regular English plural ``word`` (lower case) may come from, likeliest first."""
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")  # bodies
    if word.endswith("ves"):
        out += [word[:-3] + "f", word[:-3] + "fe"]  # scarves
    if word.endswith("es"):
        out.append(word[:-2])  # boxes, benches
    if word.endswith("s") and not word.endswith("ss"):
        out.append(word[:-1])  # legs
    return out


def singular(name: str, known: Collection[str]) -> str:
    """``name`` with its last word made singular: ``legs`` -> ``leg``, ``license plates`` ->
    ``license plate``, ``feet`` -> ``foot``; unchanged when it is no plural vlpart can undo.

    A regular plural is undone only when it is not a known name itself and its singular is
    (``known``: :func:`~vlpart.core.vocab.name_key` keys), so the part ``teeth``, the object
    ``scissors`` or an unknown ``antlers`` stay as typed; an irregular one
    (:data:`IRREGULAR_PLURALS`) always is.
    """
    if name_key(name) in known:
        return name
    head, _, last = name.rpartition(" ")
    prefix = f"{head} " if head else ""
    if last.lower() in IRREGULAR_PLURALS:
        return prefix + IRREGULAR_PLURALS[last.lower()]
    for candidate in _singular_candidates(last.lower()):
        if name_key(prefix + candidate) in known:
            return prefix + candidate
    return name


def _split_known(text: str, objects: Collection[str], parts: Collection[str]) -> str | None:
    """``Dog Head`` -> ``Dog:Head`` when some leading words are a known object and the rest a
    known part name (after :func:`singular`); None otherwise."""
    words = text.split()
    for i in range(1, len(words)):
        obj = " ".join(words[:i])
        part = singular(" ".join(words[i:]), parts)
        if name_key(obj) in objects and name_key(part) in parts:
            return f"{obj}:{part}"
    return None


def normalize_item(item: str, *, objects: Collection[str], parts: Collection[str]) -> str:
    """The canonical entry of one item typed without ``:`` (``dog``, ``legs``, ``dog's head``).

    Args:
        item: one ``,``-separated item of an entry.
        objects: :func:`~vlpart.core.vocab.name_key` keys of the known object names.
        parts: keys of the known part names.

    Returns:
        An object (``dog``), a part of an object (``dog:head``) or a part of every object
        (``*:head``), in the grammar of :func:`~vlpart.core.vocab.parse_vocabulary`, with
        runs of blanks made one.
    """
    text = " ".join(item.split())
    if name_key(text) in objects:
        return text
    if name_key(text) in parts:
        return f"{STAR}:{text}"
    text = _ARTICLE.sub("", text)
    match = _POSSESSIVE.match(text) or _PART_OF.match(text)
    if match:
        obj = singular(match["object"].strip(), objects)
        return f"{obj}:{singular(match['part'].strip(), parts)}"
    one = singular(text, set(objects) | set(parts))
    if name_key(one) in objects:
        return one
    if name_key(one) in parts:
        return f"{STAR}:{one}"
    return _split_known(text, objects, parts) or text


@cache
def _object_keys() -> frozenset[str]:
    """Keys of every object name of the built-in vocabularies."""
    return frozenset(name_key(c.object) for tax in BUILTIN_VOCABULARIES for c in load_builtin(tax))


@cache
def _part_index() -> dict[tuple[str, str], Category]:
    """``(object in lower case, part key)`` -> that part in the first part taxonomy that has
    it, in taxonomy order (``*:head`` looks in every taxonomy: PartImageNet's aeroplane has a
    head, Pascal-Part's has none)."""
    index: dict[tuple[str, str], Category] = {}
    for tax in _PART_TAXONOMIES:
        for c in load_builtin(tax):
            if c.is_part:
                index.setdefault((c.object.lower(), name_key(c.part)), c)
    return index


@cache
def _part_keys() -> frozenset[str]:
    """Keys of every part name of the built-in part taxonomies."""
    return frozenset(part for _, part in _part_index())


def _warn_if_typo(word: str, spec: str) -> None:
    """Open vocabulary accepts any word, but a near miss of a known name is probably a typo."""
    if word.lower() in _known_words():
        return
    close = difflib.get_close_matches(word.lower(), sorted(_known_words()), n=1, cutoff=0.66)
    if close:
        logger.warning("%r in %r is not a known name; did you mean %r?", word, spec, close[0])


@dataclass(frozen=True)
class _Star:
    """A ``*:head,leg`` entry, expanded once every entry of the spec has been read."""

    parts: tuple[str, ...]
    entry: str


@dataclass
class _Reading:
    """Categories and stars in spec order, the rewrites made, the words to check for typos."""

    items: list[Category | _Star] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    typed_words: list[str] = field(default_factory=list)


def _read_entry(entry: str, source: str, reading: _Reading, *, typed: str) -> None:
    """Append the categories (or the star) of one entry to ``reading``: ``entry`` is canonical
    but for plurals; ``typed`` is what the user wrote (differs when it was rewritten)."""
    if ":" not in entry:
        reading.items.append(
            Category(name=entry, object=entry, entry=typed if typed != entry else None)
        )
        reading.typed_words.append(entry)
        return
    obj, _, part_list = (s.strip() for s in entry.partition(":"))
    if not obj:
        raise InputError(f"{source}: entry {typed!r} has no object before ':'")
    typed_parts = [p.strip() for p in part_list.split(",") if p.strip()]
    if not typed_parts:
        raise InputError(
            f"{source}: entry {typed!r} names no parts; write {obj}:head,leg or {obj}:*"
        )
    if STAR in typed_parts and len(typed_parts) > 1:
        raise InputError(f"{source}: '*' must be the only part in {typed!r}")
    one = obj if obj == STAR else singular(obj, _object_keys())
    parts = [p if p == STAR else singular(p, _part_keys()) for p in typed_parts]
    plural = (one, parts) != (obj, typed_parts)
    if plural and typed == entry:  # a typed ``a:b`` entry (others were noted when rewritten)
        reading.rewrites.append(f"{typed!r} as {one + ':' + ','.join(parts)!r}")
    rewritten = typed if plural or typed != entry else None
    if one == STAR:
        reading.items.append(_Star(tuple(parts), entry=typed))
    elif parts == [STAR]:
        reading.items.extend(_every_part(one, source, entry=typed))
    else:
        reading.typed_words += [one, *parts]
        reading.items.extend(Category(f"{one}:{p}", one, part=p, entry=rewritten) for p in parts)


def _every_part(obj: str, source: str, *, entry: str) -> list[Category]:
    """``dog:*``: every part of ``obj`` in the first part taxonomy that has it."""
    known = _known_parts()
    if obj.lower() not in known:
        raise InputError(
            f"{source}: no built-in taxonomy has parts of {obj!r}"
            f"{_suggest(obj, sorted(known))}; list its parts, e.g. {obj}:head,body"
        )
    # The taxonomy's base/novel split travels with its parts.
    return [
        Category(f"{obj}:{c.part}", obj, part=c.part, split=c.split, entry=entry)
        for c in known[obj.lower()]
    ]


def _expand_star(star: _Star, listed: dict[str, str], source: str) -> list[Category]:
    """``*:head,leg`` or ``*:*`` over the ``listed`` objects (lower-case name -> name as typed),
    or over every object of the part taxonomies when none is listed; grouped by object, its
    parts in the order named. The taxonomy's split travels with the parts.

    A named part is looked up in every part taxonomy; ``*`` gives an object's parts in the
    first taxonomy that has the object, as ``dog:*`` does."""
    index = _part_index()
    objects = listed or {obj: obj for obj, _ in index}
    out: list[Category] = []
    for part in star.parts:
        if part == STAR:
            found = [c for key in objects for c in _known_parts().get(key, [])]
        else:
            found = [
                index[key, name_key(part)] for key in objects if (key, name_key(part)) in index
            ]
        if not found:
            raise InputError(_no_such_part(star, part, listed, source))
        out += [
            Category(
                f"{listed.get(c.object.lower(), c.object)}:{c.part}",
                listed.get(c.object.lower(), c.object),
                part=c.part,
                split=c.split,
                object_text=None if listed else c.object_text,
                entry=star.entry,
            )
            for c in found
        ]
    order = {key: i for i, key in enumerate(objects)}
    return sorted(out, key=lambda c: order[c.object.lower()])


def _no_such_part(star: _Star, part: str, listed: dict[str, str], source: str) -> str:
    """The one-line message of a ``*:part`` that finds no such part."""
    where = source if source == repr(star.entry) else f"{source}: {star.entry!r}"
    if not listed:
        return (
            f"{where}: no built-in taxonomy has a part {part!r}"
            f"{_suggest(part, sorted(_part_keys()))}; name its object, e.g. dog:{part}"
        )
    owners = [c.object for (_, key), c in _part_index().items() if key == name_key(part)]
    more = ", ..." if len(owners) > 4 else ""
    has = f" ({part!r} is a part of {', '.join(owners[:4])}{more})" if owners else ""
    first = next(iter(listed.values()))
    example = f"{first}:head,body" if part == STAR else f"{first}:{part}"
    what = "parts" if part == STAR else repr(part)
    return (
        f"{where}: the built-in taxonomies know no {what} of {', '.join(listed.values())}"
        f"{has or _suggest(part, sorted(_part_keys()))}; name the parts instead, e.g. {example}"
    )


def _read(spec: str, source: str) -> _Reading:
    reading = _Reading()
    lines = [line.split("#", 1)[0] for line in spec.splitlines()]
    entries = [e.strip() for line in lines for e in line.split(";")]
    for entry in filter(None, entries):
        if ":" in entry:
            _read_entry(entry, source, reading, typed=entry)
            continue
        for item in filter(None, (o.strip() for o in entry.split(","))):
            if item == STAR:
                raise InputError(
                    f"{source}: '*' alone names nothing; write *:head (that part of every "
                    "object), *:* (every part) or dog:* (every part of dog)"
                )
            canonical = normalize_item(item, objects=_object_keys(), parts=_part_keys())
            if canonical != " ".join(item.split()):
                reading.rewrites.append(f"{item!r} as {canonical!r}")
            _read_entry(canonical, source, reading, typed=item)
    return reading


def parse_entries(spec: str, source: str) -> list[Category]:
    """The categories of a spec's entries (``;`` or new lines between them, ``#`` comments),
    ids their 1-based positions; duplicates merged, the first occurrence winning.

    Args:
        spec: the entries.
        source: how messages name the spec (a file path, or the spec quoted).

    Raises:
        InputError: a malformed entry, a ``*`` that finds nothing, or more than
            :data:`~vlpart.core.vocab.MAX_CATEGORIES` categories.
    """
    reading = _read(spec, source)
    listed = {c.object.lower(): c.object for c in reading.items if isinstance(c, Category)}
    cats: list[Category] = []
    for item in reading.items:
        cats += _expand_star(item, listed, source) if isinstance(item, _Star) else [item]
    unique: dict[str, Category] = {}
    for c in cats:
        unique.setdefault(name_key(c.name), c)
    if len(unique) > MAX_CATEGORIES:
        raise InputError(
            f"{source} gives {len(unique)} categories, more than {MAX_CATEGORIES}; name fewer "
            "objects or parts (a '*' entry gives every one the taxonomies know)"
        )
    if reading.rewrites:
        logger.warning(
            "%s: read %s (`vlpart vocab show` prints the prompts)",
            source,
            ", ".join(reading.rewrites),
        )
    for word in dict.fromkeys(reading.typed_words):
        _warn_if_typo(word, source)
    for star in dict.fromkeys(i.entry for i in reading.items if isinstance(i, _Star)):
        names = [c.name for c in unique.values() if c.entry == star]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        logger.info("%s: %r gives %d: %s", source, star, len(names), shown)
    return [dataclasses.replace(c, id=i + 1) for i, c in enumerate(unique.values())]
