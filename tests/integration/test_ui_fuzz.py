"""The REST API fuzzed against its own OpenAPI document (schemathesis): whatever a client
sends that the document allows, the answer is never a server error.

Every operation of ``/api/v1/openapi.json`` but the live streams is called with generated
paths, queries and bodies (submits and cancels included: they reach the real scheduler), with
the token.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error

from tests.integration.test_ui_api import TOKEN, Api, api

__all__ = ["api"]

#: Generated calls per operation: enough to walk each one's parameters, within CI's budget.
EXAMPLES = 12
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_no_call_the_document_allows_is_a_server_error(api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/api/v1/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 10, "the document lists the API's operations"
    # the live streams (server-sent events) never end by themselves; test_ui_api reads them
    operations = [op for op in operations if not op.path.endswith("/events")]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: Case) -> None:
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error], timeout=30)

        call()
