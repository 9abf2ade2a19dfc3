"""The v1 message bodies as other services read them off the wire."""

from __future__ import annotations

import json

from service.messages import SyncRequest


def test_a_pull_request_leaves_records_out_and_a_push_carries_them() -> None:
    """CONTRACT section 3: `records` is required for push and absent (not null) for pull."""
    pull = json.loads(SyncRequest(job_id="j1", venue_id="v1", provider="stripe", entity="customers").to_json_bytes())
    assert "records" not in pull
    assert ("integration.sync_request.v1", "pull", {}) == (pull["schema"], pull["direction"], pull["options"])
    assert SyncRequest.model_validate(pull).records is None  # and it reads back the same
    push = SyncRequest(
        job_id="j2", venue_id="v1", provider="stripe", entity="customers", direction="push", records=[{"id": "r1"}]
    )
    assert [{"id": "r1"}] == json.loads(push.to_json_bytes())["records"]
