"""Vocabularies: built-in taxonomies, ``object:part`` specs, prompt templates, granularity.

A category is an *object* (``dog``) or an *object part* (``dog:head``). A :class:`Vocabulary` is an
ordered tuple of categories; row ``i`` of its text-embedding matrix is category ``i``.

Specs accepted by :func:`parse_vocabulary` (and ``--vocab`` on the command line):

* a built-in taxonomy: ``pascal_part``, ``partimagenet``, ``paco``, ``voc``, ``coco``, ``lvis``;
* entries separated by ``;`` or new lines, each one of
  ``dog`` (an object; ``dog,cat`` is two objects),
  ``dog:head,torso,leg,tail`` (parts of an object: the granularity the user asks for),
  ``dog:*`` (every part of ``dog`` a built-in taxonomy knows),
  ``*:head,leg`` (those parts of every object listed in the spec, or, when it lists none, of
  every object the built-in part taxonomies know), ``*:*`` (every part of them);
* a path to a text file holding such entries (``#`` starts a comment).

Names are read as people write them (:mod:`vlpart.core.vocab_normalize`): ``legs`` is ``*:leg``,
``dog's head`` and ``head of a dog`` are ``dog:head``; a warning says what was rewritten and
:attr:`Category.entry` keeps what was typed. A spec gives at most :data:`MAX_CATEGORIES`.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from vlpart.core.errors import InputError
from vlpart.core.fileio import read_text_file
from vlpart.core.taxonomy import BUILTIN_VOCABULARIES as BUILTIN_VOCABULARIES
from vlpart.core.taxonomy import DEFAULT_TEMPLATE as DEFAULT_TEMPLATE
from vlpart.core.taxonomy import GRANULARITIES as GRANULARITIES
from vlpart.core.taxonomy import MAX_CATEGORIES as MAX_CATEGORIES
from vlpart.core.taxonomy import OBJECT_TEMPLATE as OBJECT_TEMPLATE
from vlpart.core.taxonomy import PROMPT_TEMPLATES as PROMPT_TEMPLATES
from vlpart.core.taxonomy import SPLITS as SPLITS
from vlpart.core.taxonomy import Category as Category
from vlpart.core.taxonomy import Vocabulary as Vocabulary
from vlpart.core.taxonomy import _known_words, _suggest
from vlpart.core.taxonomy import at_granularity as at_granularity
from vlpart.core.taxonomy import load_builtin as load_builtin
from vlpart.core.taxonomy import name_key as name_key
from vlpart.core.taxonomy import pascal_part_mat_tokens as pascal_part_mat_tokens
from vlpart.core.taxonomy import prompt_template as prompt_template
from vlpart.core.taxonomy import split_category_name as split_category_name
from vlpart.core.vocab_normalize import parse_entries

__all__ = [
    "BUILTIN_VOCABULARIES",
    "Category",
    "DEFAULT_TEMPLATE",
    "GRANULARITIES",
    "MAX_CATEGORIES",
    "OBJECT_TEMPLATE",
    "PROMPT_TEMPLATES",
    "SPLITS",
    "Vocabulary",
    "at_granularity",
    "load_builtin",
    "name_key",
    "parse_vocabulary",
    "pascal_part_mat_tokens",
    "prompt_template",
    "split_category_name",
]


def parse_vocabulary(spec: str | Path | Vocabulary) -> Vocabulary:
    """Turn a spec (built-in name, entries, or a file of entries) into a :class:`Vocabulary`.

    Duplicate entries are merged (first occurrence wins the position); names are read as people
    type them and ``*`` entries expanded (:mod:`vlpart.core.vocab_normalize`).

    Raises:
        ValueError: unknown built-in name (with close matches), malformed entry, ``obj:*`` for an
            object no taxonomy knows, a ``*:part`` that finds nothing, more than
            :data:`MAX_CATEGORIES` categories, or an empty spec.
        FileNotFoundError: ``spec`` names a ``.txt`` file that does not exist.
    """
    if isinstance(spec, Vocabulary):
        return spec
    text = str(spec).strip()
    if text in BUILTIN_VOCABULARIES:
        return load_builtin(text)
    path = Path(text)
    if isinstance(spec, Path) or text.endswith((".txt", ".vocab")):
        cats = parse_entries(read_text_file(path, "vocabulary"), str(path))
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
    shown = repr(text if len(text) <= 60 else text[:57] + "...")
    return Vocabulary(tuple(parse_entries(text, shown)), name=text)
