"""Schemathesis fuzzes every operation in the OpenAPI schema against the running app (its
lifespan started, the tiny model loaded): whatever it sends, the answer is never a 5xx.

The operations are fuzzed in one test with Hypothesis directly: schemathesis's own
`pytest.from_fixture` loader does not work with pytest 9 (it reads a removed private
attribute), and the schema can only be loaded at run time, once the tiny model exists.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans

from service.app import create_app

EXAMPLES_PER_OPERATION = 15


def test_no_operation_answers_with_a_server_error(make_settings, tiny_scene_model_path) -> None:
    # Schemathesis drives the ASGI app itself, lifespan included, until shutdown_lifespans.
    # With a (tiny) scene model, so that /v1/detect and mode=scene are fuzzed too.
    app_settings = make_settings(scenes=True, scene_model=tiny_scene_model_path, scene_long_side=64)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(app_settings))
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        paths = {op.path for op in operations}
        assert paths >= {"/v1/predict", "/v1/predict/batch", "/v1/video", "/v1/detect"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case) -> None:
                case.call_and_validate(checks=[not_a_server_error])

            fuzz()
    finally:
        shutdown_lifespans()
