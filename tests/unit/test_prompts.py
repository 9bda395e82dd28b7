"""Unit tests for fedgrpo.data.prompts: the prompt template, the target completion, the final-answer
extractor and the well-formedness check (pre-filled tag, re-opened tags, last tag wins, whitespace,
empty and unclosed answers, None / empty input, garbage, and the render -> extract round trip)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedgrpo.data.prompts import (
    CLOSE_TAG,
    OPEN_TAG,
    extract_answer,
    is_well_formed,
    render_completion,
    render_prompt,
)


def test_render_prompt_ends_with_the_prefilled_open_tag():
    assert render_prompt("Calculate 2 + 3.") == "Calculate 2 + 3.\n<answer>"


def test_render_prompt_strips_surrounding_whitespace_of_the_question():
    # The prompt must not depend on stray whitespace around the generator's text.
    assert render_prompt("  Calculate 2 + 3.\n\n") == render_prompt("Calculate 2 + 3.")


def test_render_completion_is_the_stripped_answer_then_the_close_tag():
    assert render_completion(" 42 ") == "42</answer>"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("42</answer>", "42"),  # continues the pre-filled tag
        ("<answer>42</answer>", "42"),  # re-opens the tag itself
        ("<answer>7</answer> oops, <answer>8</answer>", "8"),  # several tags: the last wins
        ("7</answer> then <answer>8</answer>", "8"),  # a pre-filled answer then a re-opened one
        ("  42 \n</answer>", "42"),  # whitespace around the answer is not part of it
        ("<answer>\n 9 \t</answer>", "9"),
        ("<answer>line one\nline two</answer>", "line one\nline two"),  # answers may span lines
        ("42</answer> trailing chatter", "42"),  # text after the close tag is ignored
    ],
)
def test_extract_answer_finds_the_final_answer(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize(
    "completion",
    [
        "</answer>",  # empty answer
        "   </answer>",  # whitespace-only answer
        "<answer></answer>",  # empty re-opened tag
        "<answer>  </answer>",
        "42",  # never closed: not a final answer
        "<answer>42",  # truncated re-opened tag
        "the answer is 42",  # garbage
        "<answer",  # half a tag
        "42</answer",  # half a close tag
        None,
        "",
    ],
)
def test_extract_answer_returns_none_without_a_closed_non_empty_answer(completion):
    assert extract_answer(completion) is None


def test_extract_answer_does_not_score_text_after_an_unclosed_reopened_tag():
    # A closed pre-filled answer followed by a truncated re-opened tag is ambiguous: the completion
    # both closes and re-opens, so it is not read as a final answer.
    assert extract_answer("41</answer> <answer>42") is None


@pytest.mark.parametrize(
    "completion",
    ["42</answer>", "42</answer>\n", "  42  </answer>  ", "two words</answer>"],
)
def test_is_well_formed_accepts_a_single_closed_prefilled_answer(completion):
    assert is_well_formed(completion)


@pytest.mark.parametrize(
    "completion",
    [
        "42",  # not closed
        "</answer>",  # empty
        "  </answer>",
        "42</answer> more text",  # chatter after the answer
        "42</answer></answer>",  # closed twice
        "<answer>42</answer>",  # re-opens the pre-filled tag
        "<answer>42",
        None,
        "",
    ],
)
def test_is_well_formed_rejects_anything_else(completion):
    assert not is_well_formed(completion)


def test_a_rendered_completion_is_well_formed_and_extracts_to_the_answer():
    completion = render_completion("lavitad")
    assert is_well_formed(completion)
    assert extract_answer(completion) == "lavitad"


def test_rendering_an_empty_answer_extracts_to_none():
    # An empty gold answer must not turn into a scorable empty string.
    assert extract_answer(render_completion("   ")) is None


_answers = st.text(max_size=40).filter(
    lambda s: s.strip() and OPEN_TAG not in s and CLOSE_TAG not in s
)


@given(_answers)
def test_render_completion_round_trips_through_extract_answer(answer):
    completion = render_completion(answer)
    assert extract_answer(completion) == answer.strip()
    assert is_well_formed(completion)


@given(_answers)
def test_prompt_plus_completion_contains_exactly_one_tag_pair(answer):
    # The training text (prompt + completion) must read as one <answer>...</answer> pair, the layout
    # reasoning-gym's format reward checks.
    text = render_prompt("Q?") + render_completion(answer)
    assert text.count(OPEN_TAG) == 1
    assert text.count(CLOSE_TAG) == 1
    assert extract_answer(text) == answer.strip()
