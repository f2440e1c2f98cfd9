"""IOB2 checks and repair, and the alignment of word tags to sub-word tokens, against
hand-checked cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.tags import TagProblem, check_iob2, entity_types
from tests.support.factories import ENTITY_WORDS, NEUTRAL, SPECIAL

IGNORED = -100


def test_valid_iob2_passes_unchanged() -> None:
    tags = ["O", "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    verdict = check_iob2(tags)
    assert verdict.broken_at is None and verdict.repaired == tags


@pytest.mark.parametrize(
    ("tags", "broken_at", "repaired"),
    [
        (["I-PER", "I-PER", "O"], 0, ["B-PER", "I-PER", "O"]),  # IOB1: an entity starts with I-
        (["O", "I-LOC"], 1, ["O", "B-LOC"]),
        (["B-PER", "I-LOC", "I-LOC"], 1, ["B-PER", "B-LOC", "I-LOC"]),  # the type changes
        (["B-ORG", "O", "I-ORG"], 2, ["B-ORG", "O", "B-ORG"]),  # a gap ends the entity
    ],
)
def test_broken_iob2_is_found_and_repaired(
    tags: list[str], broken_at: int, repaired: list[str]
) -> None:
    verdict = check_iob2(tags)
    assert verdict.broken_at == broken_at
    assert verdict.repaired == repaired
    assert check_iob2(verdict.repaired).broken_at is None


@pytest.mark.parametrize("tag", ["PER", "B_PER", "b-PER", "B-", "X-PER", ""])
def test_tags_that_are_not_iob2_are_named(tag: str) -> None:
    with pytest.raises(TagProblem, match="not IOB2"):
        check_iob2(["O", tag])


def test_entity_types() -> None:
    assert entity_types(["O", "B-PER", "I-PER", "B-LOC", "I-MISC"]) == ["LOC", "MISC", "PER"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    from transformers import BertTokenizerFast

    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + NEUTRAL + ENTITY_WORDS + ["."]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def aligned(tokenizer: object, words: list[str], tags: list[int], max_length: int = 64) -> tuple:
    from worker.pipeline.tasks.token import align_tags

    encoded = tokenizer(  # type: ignore[operator]
        [words], is_split_into_words=True, truncation=True, max_length=max_length
    )
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])  # type: ignore[attr-defined]
    return tokens, *align_tags(encoded.word_ids(0), tags)


def test_a_word_split_into_pieces_is_labelled_on_its_first_piece(tokenizer: object) -> None:
    # "Parises" -> "paris", "##es": the tag on "paris", the loss skips "##es".
    tokens, labels, first = aligned(tokenizer, ["John", "visited", "Parises", "."], [1, 0, 3, 0])
    assert tokens == ["[CLS]", "john", "visited", "paris", "##es", ".", "[SEP]"]
    assert labels == [IGNORED, 1, 0, 3, IGNORED, 0, IGNORED]
    assert first == [1, 2, 3, 5]


def test_a_multi_word_entity_keeps_one_label_per_word(tokenizer: object) -> None:
    tokens, labels, first = aligned(tokenizer, ["New", "York", "parises"], [3, 4, 3])
    assert tokens == ["[CLS]", "new", "york", "paris", "##es", "[SEP]"]
    assert labels == [IGNORED, 3, 4, 3, IGNORED, IGNORED]
    assert first == [1, 2, 3]


def test_a_word_the_tokenizer_drops_has_no_token(tokenizer: object) -> None:
    # A zero-width space is cleaned away: no token, so no label, and evaluation counts the
    # word as tagged O (first token -1).
    tokens, labels, first = aligned(tokenizer, ["John", "\u200b", "met", "Mary"], [1, 0, 0, 1])
    assert tokens == ["[CLS]", "john", "met", "mary", "[SEP]"]
    assert labels == [IGNORED, 1, 0, 1, IGNORED]
    assert first == [1, -1, 2, 3]


def test_words_cut_by_truncation_have_no_token(tokenizer: object) -> None:
    tokens, labels, first = aligned(
        tokenizer, ["John", "visited", "Parises", "London"], [1, 0, 3, 3], max_length=5
    )
    assert tokens == ["[CLS]", "john", "visited", "paris", "[SEP]"]
    assert labels == [IGNORED, 1, 0, 3, IGNORED]
    assert first == [1, 2, 3, -1]


def test_an_unknown_word_is_one_unk_token(tokenizer: object, tmp_path: Path) -> None:
    tokens, labels, first = aligned(tokenizer, ["Zanzibar", "visited"], [3, 0])
    assert tokens == ["[CLS]", "[UNK]", "visited", "[SEP]"]
    assert labels == [IGNORED, 3, 0, IGNORED]
    assert first == [1, 2]
