"""Fuzz `nnlab serve`'s own OpenAPI schema with schemathesis: no generated request may get a 5xx.

The app is built in-process on the shared ``image_run`` fixture and reached through
schemathesis's ASGI transport, so nothing listens on a socket (loopback only, not even that).
Examples are bounded per operation and the deadline is off, so the module stays well under 30 s.
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from nnlab.commands.serve import create_app

EXAMPLES = 25  # per API operation


@pytest.fixture(scope="module")
def api_schema(image_run):
    app = create_app([image_run], device="cpu", max_bytes=200_000)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_schema_exposes_the_operations_being_fuzzed(api_schema):
    """The fuzzing below is only worth something if the served schema lists the real endpoints."""
    raw = api_schema.raw_schema
    assert {"/health", "/models", "/models/{model}/reload", "/predict/{model}"} <= set(raw["paths"])
    assert "post" in raw["paths"]["/predict/{model}"]


def test_no_generated_request_gets_a_server_error(api_schema):
    """Every operation of the served schema, EXAMPLES generated requests each (schemathesis's strategies)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 4
    statuses = {}
    for operation in operations:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case):
            calls = [case]
            if case.path_parameters and "model" in case.path_parameters:
                # Random model names all end at the 404 lookup; the served name reaches the handlers behind it.
                served = case.operation.Case(path_parameters={**case.path_parameters, "model": "squares"},
                                             query=case.query, headers=case.headers, body=case.body,
                                             media_type=case.media_type)
                calls.append(served)
            for call in calls:
                response = call.call()
                statuses.setdefault(operation.label, set()).add(response.status_code)
                assert response.status_code < 500, (f"{operation.label} -> {response.status_code}: "
                                                    f"{response.text[:300]}\n{call.as_curl_command()}")

        fuzz()
    print("statuses per operation:", statuses)
    # Each operation was really called, and the fuzzing reached past the validators somewhere.
    assert set(statuses) == {operation.label for operation in operations}
    assert any(code < 300 for codes in statuses.values() for code in codes), statuses
    assert statuses["POST /predict/{model}"] - {404}, statuses  # the served model's handler was reached
