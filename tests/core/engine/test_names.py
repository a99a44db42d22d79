"""The caller's own name, as people give it (core/engine/interpreters/names.py)."""

from __future__ import annotations

import pytest

from core.engine.interpreters.names import caller_name, split_name


@pytest.mark.parametrize(("said", "name"), [
    ("this is Maria Lopez", "Maria Lopez"), ("Maria", "Maria"), ("it's Dr. Lopez's office", "Dr. Lopez's Office"),
    ("maria lopez", "Maria Lopez"), ("hi, my name is sam o'neil", "Sam O'neil"), ("Im Tom", "Tom"),
    ("Jo Ann Baker here", "Jo Ann Baker"), ("call me Rosa", "Rosa"), ("it's James Carter, thanks", "James Carter"),
    ("skip", "none"), ("rather not say", "none"), ("no thanks", "none"),
])
def test_a_name_given_when_asked_is_read_as_given(said, name):
    assert caller_name(said) == name


@pytest.mark.parametrize("said", ["I'm new", "this is urgent", "what do you need it for?", "call me after 5",
                                  "idk", "I'm calling about my divorce", "123 Main St"])
def test_a_reply_that_is_not_a_name_is_not_taken_for_one(said):
    assert caller_name(said) is None


@pytest.mark.parametrize(("said", "name"), [("My name is Maria Lopez and it's about a divorce", "Maria Lopez"),
                                            ("This is Dana Whitfield, I need help with a will", "Dana Whitfield"),
                                            ("this is stupid", None), ("this is about my divorce", None),
                                            ("I'm new here", None)])
def test_a_name_said_before_it_is_asked_counts_only_when_unmistakable(said, name):
    assert caller_name(said, strict=True) == name


def test_a_crm_contact_gets_first_and_last_name_and_an_office_stays_whole():
    assert split_name("Maria Lopez") == ("Maria", "Lopez")
    assert split_name("Jo Ann Baker") == ("Jo", "Ann Baker")
    assert split_name("Dr. Lopez's Office") == ("Dr. Lopez's Office", None)
    assert split_name("Priya") == ("Priya", None)
