"""IOB2 tag sequences for token classification, shared by the API (checks at submit) and the
worker (the repair it applies when a job asks for it).

IOB2: a word outside any entity is `O`; an entity's first word is `B-TYPE`, its next words
`I-TYPE`. An `I-TYPE` that follows neither `B-TYPE` nor `I-TYPE` breaks the scheme; IOB1 data
(CoNLL-2003 as first published) starts entities with `I-` that way, and the usual repair makes
that word `B-TYPE`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class TagProblem(ValueError):
    """A tag sequence a token-classification job cannot be trained on as it is."""


def entity_type(tag: str) -> str | None:
    """`B-PER` -> `PER`; `O` -> None. Raises for a tag that is not IOB2."""
    if tag == "O":
        return None
    if len(tag) > 2 and tag[:2] in ("B-", "I-"):
        return tag[2:]
    raise TagProblem(f"tag {tag!r} is not IOB2 (O, B-TYPE or I-TYPE)")


@dataclass(frozen=True)
class TagCheck:
    """One row's verdict: the first broken position (None if valid) and the repaired tags."""

    broken_at: int | None
    repaired: list[str]


def check_iob2(tags: Sequence[str]) -> TagCheck:
    """Whether `tags` are valid IOB2, and the same sequence with each stray I-X made B-X."""
    repaired: list[str] = []
    broken_at = None
    previous: str | None = None
    for position, tag in enumerate(tags):
        kind = entity_type(tag)
        if tag.startswith("I-") and previous != kind:
            broken_at = position if broken_at is None else broken_at
            tag = "B-" + tag[2:]
        repaired.append(tag)
        previous = kind
    return TagCheck(broken_at, repaired)


def entity_types(names: Sequence[str]) -> list[str]:
    """The entity types named by a tag set, sorted (`B-PER`, `I-PER`, `O` -> `PER`)."""
    return sorted({t for t in (entity_type(name) for name in names) if t is not None})
