import datetime as dt
import gzip
import io
import json
import tarfile
from decimal import Decimal

import pytest

from connectors.mailchimp.payloads import (
    BatchOperation,
    MemberUpsert,
    MergeFieldSpec,
    batch_operation_payload,
    chunked,
    find_duplicate_emails,
    member_upsert_body,
    merge_field_create_body,
    merge_fields_payload,
    parse_batch_results,
    quarter_hour_slot,
    static_segment_changes,
    subscriber_hash,
)

UTC = dt.UTC


def test_subscriber_hash_is_md5_of_the_lower_cased_trimmed_address():
    assert subscriber_hash("urist.mcvankab@freddiesjokes.com") == "62eeb292278cc15f5817cb78f7790b08"
    assert subscriber_hash("  Urist.McVankab@FreddiesJokes.com ") == "62eeb292278cc15f5817cb78f7790b08"


def test_merge_fields_payload_keeps_numbers_and_flattens_the_rest():
    payload = merge_fields_payload(
        {
            "OPENISSUES": 3,
            "SCORE": Decimal("2.5"),
            "PRODLINES": ["Cables", "Connectors"],
            "RENEWAL": dt.date(2025, 3, 1),
            "PMGR": None,
            "VIP": True,
        }
    )
    assert payload == {
        "OPENISSUES": 3,
        "SCORE": 2.5,
        "PRODLINES": "Cables, Connectors",
        "RENEWAL": "2025-03-01",
        "PMGR": "",
        "VIP": "yes",
    }


@pytest.mark.parametrize("tag", ["buid", "1ABC", "TOO_LONG_TAG", "A-B", ""])
def test_merge_fields_payload_names_a_bad_tag(tag):
    with pytest.raises(ValueError, match="merge tag"):
        merge_fields_payload({tag: "x"})


def test_merge_field_spec_checks_type_and_choices():
    assert merge_field_create_body(MergeFieldSpec(tag="TIER", name="Tier", type="dropdown", choices=("A", "B"))) == {
        "tag": "TIER",
        "name": "Tier",
        "type": "dropdown",
        "required": False,
        "public": False,
        "options": {"choices": ["A", "B"]},
    }
    with pytest.raises(ValueError, match="unknown type"):
        MergeFieldSpec(tag="X", name="X", type="colour")
    with pytest.raises(ValueError, match="choices"):
        MergeFieldSpec(tag="X", name="X", type="text", choices=("a",))


def test_member_upsert_body_never_carries_status():
    body = member_upsert_body(MemberUpsert(email=" ada@example.com ", merge_fields={"FNAME": "Ada"}, language="en"))
    assert body == {
        "email_address": "ada@example.com",
        "status_if_new": "subscribed",
        "merge_fields": {"FNAME": "Ada"},
        "language": "en",
    }
    assert "status" not in body
    with pytest.raises(ValueError):
        MemberUpsert(email="ada@example.com", status_if_new="cleaned")
    with pytest.raises(ValueError):
        MemberUpsert(email="not-an-address")


def test_find_duplicate_emails_ignores_case():
    members = [MemberUpsert(email="a@example.com"), MemberUpsert(email="A@Example.com"), MemberUpsert(email="b@x.io")]
    assert find_duplicate_emails(members) == ["a@example.com"]


def test_chunked_and_static_segment_changes_respect_the_500_cap():
    assert [len(chunk) for chunk in chunked(list(range(1001)), 500)] == [500, 500, 1]
    bodies = static_segment_changes(add=[f"a{i}@x.io" for i in range(1200)], remove=[f"r{i}@x.io" for i in range(501)])
    assert [(len(b.get("members_to_add", [])), len(b.get("members_to_remove", []))) for b in bodies] == [
        (500, 500),
        (500, 1),
        (200, 0),
    ]
    assert static_segment_changes(add=[], remove=[]) == []


@pytest.mark.parametrize(
    ("when", "slot"),
    [
        (dt.datetime(2025, 5, 1, 10, 0, tzinfo=UTC), dt.datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
        (dt.datetime(2025, 5, 1, 10, 0, 1, tzinfo=UTC), dt.datetime(2025, 5, 1, 10, 15, tzinfo=UTC)),
        (dt.datetime(2025, 5, 1, 10, 14, 59, 999, tzinfo=UTC), dt.datetime(2025, 5, 1, 10, 15, tzinfo=UTC)),
        (dt.datetime(2025, 5, 1, 10, 31, tzinfo=UTC), dt.datetime(2025, 5, 1, 10, 45, tzinfo=UTC)),
        (dt.datetime(2025, 12, 31, 23, 50, tzinfo=UTC), dt.datetime(2026, 1, 1, 0, 0, tzinfo=UTC)),
        # 12:07 at +02:00 is 10:07 UTC
        (
            dt.datetime(2025, 5, 1, 12, 7, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2025, 5, 1, 10, 15, tzinfo=UTC),
        ),
    ],
)
def test_quarter_hour_slot_rounds_up_in_utc(when, slot):
    result = quarter_hour_slot(when)
    assert result == slot
    assert result.utcoffset() == dt.timedelta(0)


def test_quarter_hour_slot_refuses_naive_times():
    with pytest.raises(ValueError, match="timezone-aware"):
        quarter_hour_slot(dt.datetime(2025, 5, 1, 10, 0))


def test_batch_operation_payload_sends_the_body_as_a_json_string():
    operation = BatchOperation(method="PUT", path="/lists/x/members/h", operation_id="op-1", body={"a": 1})
    assert batch_operation_payload(operation) == {
        "method": "PUT",
        "path": "/lists/x/members/h",
        "operation_id": "op-1",
        "body": '{"a": 1}',
    }
    with pytest.raises(ValueError, match="omit /3.0"):
        BatchOperation(method="GET", path="/3.0/ping", operation_id="x")


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_parse_batch_results_reads_every_json_file_of_the_tar():
    first = [
        {"status_code": 200, "operation_id": "a", "response": json.dumps({"id": "h1", "status": "subscribed"})},
        {"status_code": 400, "operation_id": "b", "response": json.dumps({"title": "Invalid Resource"})},
    ]
    second = [{"status_code": 204, "operation_id": "c", "response": ""}]
    archive = _archive(
        {
            "b1/0001.json": json.dumps(first).encode(),
            "b1/0002.json": json.dumps(second).encode(),
            "b1/README.txt": b"not json, skipped",
        }
    )
    results = parse_batch_results(archive)
    assert [(r.operation_id, r.status_code, r.ok) for r in results] == [
        ("a", 200, True),
        ("b", 400, False),
        ("c", 204, True),
    ]
    assert results[0].response == {"id": "h1", "status": "subscribed"}
    assert results[1].response["title"] == "Invalid Resource"
    assert results[2].response is None


def test_parse_batch_results_names_what_is_wrong():
    with pytest.raises(ValueError, match="not a gzipped tar"):
        parse_batch_results(b"plain bytes")
    with pytest.raises(ValueError, match="not JSON"):
        parse_batch_results(_archive({"x.json": b"{oops"}))
    with pytest.raises(ValueError, match="without status_code"):
        parse_batch_results(_archive({"x.json": b'[{"operation_id": "a"}]'}))
    with pytest.raises(ValueError, match="not a gzipped tar"):
        parse_batch_results(gzip.compress(b"not a tar"))
