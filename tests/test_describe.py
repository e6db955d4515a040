"""The settings reference's parts: Args lines, first sentences, a field without a description."""

from dataclasses import dataclass

import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.tasks import describe


@dataclass(frozen=True)
class Base:
    """Args:
        alpha: the first. It has a second sentence.
    """

    alpha: int = 1


@dataclass(frozen=True)
class Group(Base):
    """Args (beyond `Base`'s):
        beta, gamma: two fields, one line, e.g. this one, continued
            on the next line.
        delta: stops at the full stop... not at an ellipsis.
    """

    beta: int = 2
    gamma: int = 3
    delta: int = 4


def test_args_lines_cover_names_continuations_and_bases():
    docs = describe.field_docs(Group)
    assert docs == {"beta": "two fields, one line, e.g. this one, continued on the next line.",
                    "gamma": "two fields, one line, e.g. this one, continued on the next line.",
                    "delta": "stops at the full stop... not at an ellipsis.",
                    "alpha": "the first. It has a second sentence."}


def test_first_sentence_ends_at_a_full_stop_only():
    assert describe.first_sentence("the first. It has a second sentence.") == "the first."
    assert describe.first_sentence("as Schneider et al. (2020) do. More.") == "as Schneider et al. (2020) do."
    assert describe.first_sentence("seeds 0, 1, ... of e.g. the split (None: all).") == \
        "seeds 0, 1, ... of e.g. the split (None: all)."


def test_a_field_without_a_description_stops_the_reference(monkeypatch):
    monkeypatch.setattr(describe, "field_docs", lambda group: {})
    with pytest.raises(KitError, match="field 'val_fraction' has no line in its Args docstring"):
        describe.settings_markdown(("mars",))
