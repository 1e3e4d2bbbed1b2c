import pytest
from django.http import QueryDict

from connectors.mailchimp.webhooks import encode_bracketed_form, parse_bracketed_form


def test_parse_bracketed_form_nests_bracketed_keys():
    form = {
        "type": "profile",
        "fired_at": "2025-05-01 10:15:00",
        "data[id]": "8a25ff1d98",
        "data[list_id]": "a6b5da1054",
        "data[email]": "ada@example.com",
        "data[merges][FNAME]": "Ada",
        "data[merges][INTERESTS][0]": "Cables",
    }
    assert parse_bracketed_form(form) == {
        "type": "profile",
        "fired_at": "2025-05-01 10:15:00",
        "data": {
            "id": "8a25ff1d98",
            "list_id": "a6b5da1054",
            "email": "ada@example.com",
            "merges": {"FNAME": "Ada", "INTERESTS": {"0": "Cables"}},
        },
    }


def test_parse_bracketed_form_takes_a_querydict():
    form = QueryDict("type=upemail&data%5Bold_email%5D=a%40x.io&data%5Bnew_email%5D=b%40x.io")
    assert parse_bracketed_form(form) == {"type": "upemail", "data": {"old_email": "a@x.io", "new_email": "b@x.io"}}


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"data": "x", "data[id]": "1"}, "clashes"),
        ({"data[id]": "1", "data": "x"}, "clashes"),
        ({"data[merges": "x"}, "malformed"),
        ({"data[]": "x"}, "empty"),
        ({"[id]": "x"}, "malformed"),
    ],
)
def test_parse_bracketed_form_names_the_bad_key(form, message):
    with pytest.raises(ValueError, match=message):
        parse_bracketed_form(form)


def test_encode_then_parse_round_trips():
    nested = {"type": "cleaned", "data": {"email": "a@x.io", "reason": "hard", "merges": {"FNAME": "A", "N": 3}}}
    pairs = encode_bracketed_form(nested)
    assert ("data[merges][FNAME]", "A") in pairs
    assert parse_bracketed_form(dict(pairs)) == {
        "type": "cleaned",
        "data": {"email": "a@x.io", "reason": "hard", "merges": {"FNAME": "A", "N": "3"}},
    }
