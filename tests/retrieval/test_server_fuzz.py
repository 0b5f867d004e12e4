"""A bounded schemathesis run against the app's own OpenAPI schema (in-process, ASGI): whatever the schema
allows a client to send, no answer is a 5xx or carries a stack trace."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from index.builder import build_index
from retrieval import SearchPipeline
from retrieval.server import ServerSettings, create_app
from tests.conftest import SAMPLE_CORPUS
from tests.reliability import bm25_only, bm25_pipeline_config


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    target = tmp_path_factory.mktemp("fuzz") / "idx"
    build_index(SAMPLE_CORPUS, target, bm25_only(), show_progress=False)
    app = create_app(SearchPipeline.from_config(bm25_pipeline_config(target)), ServerSettings(request_timeout_s=20))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_no_server_errors(api_schema):
    # Each operation of the schema in turn, with hypothesis driving schemathesis's strategies (its pytest plugin
    # does not run under this pytest); bounded: 25 examples per operation.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            response = case.call()
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:300])
            assert "Traceback" not in response.text

        check()
