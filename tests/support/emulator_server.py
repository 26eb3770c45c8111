"""moto's server, with answers SageMaker Python SDK 3.x can read back (tests only).

Run as `python -m support.emulator_server -H 127.0.0.1 -p PORT`; `aws_emulator` starts it.
sagemaker-core's resources describe what they have just created and validate the answer
against the API's shapes. moto answers an optional structure that was never given as an
empty object, where AWS leaves the field out, and an empty object lacks the structure's
required fields (VpcConfig its subnets, DataCaptureConfig its destination). This module
leaves such empty structures out of moto's describe answers, as AWS does; the launch code
is not patched.
"""

from __future__ import annotations

from typing import Any

from moto import server
from moto.core.responses import ActionResult
from moto.sagemaker.responses import SageMakerResponse

OPTIONAL = ("VpcConfig", "DataCaptureConfig")  # the structures moto answers empty


def without_empty_optionals(described: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in described.items() if not (key in OPTIONAL and value == {})}


def describe_model(self: SageMakerResponse) -> ActionResult:
    model = self.sagemaker_backend.describe_model(self._get_param("ModelName"))
    return ActionResult(without_empty_optionals(model.response_object))


def describe_endpoint_config(self: SageMakerResponse) -> ActionResult:
    name = self._get_param("EndpointConfigName")
    return ActionResult(
        without_empty_optionals(self.sagemaker_backend.describe_endpoint_config(name))
    )


def describe_endpoint(self: SageMakerResponse) -> ActionResult:
    name = self._get_param("EndpointName")
    return ActionResult(without_empty_optionals(self.sagemaker_backend.describe_endpoint(name)))


# moto's own describe answers feed its other calls (CreateEndpoint reads the config's):
# only what the client is answered changes.
SageMakerResponse.describe_model = describe_model  # type: ignore[method-assign]
SageMakerResponse.describe_endpoint_config = describe_endpoint_config  # type: ignore[method-assign]
SageMakerResponse.describe_endpoint = describe_endpoint  # type: ignore[method-assign]

if __name__ == "__main__":
    server.main()
