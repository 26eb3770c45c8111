"""`deploy`, `invoke` and `cleanup`: a real-time endpoint running the serving image."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from launch.cloud.settings import (
    LOCAL_INSTANCE_TYPES,
    AwsTarget,
    CloudError,
    import_sagemaker,
    unique_name,
)
from serving import content_types

JSON = content_types.JSON
PAYLOADS = ("image", "json")  # raw image bytes, or the serving image's {"instances": [{"b64"}]}
ENDPOINT_BASE = "imgcls"


def image_predictor_class() -> type:
    """A Predictor that sends image bytes and parses the serving image's JSON predictions.

    Built on first use because the SDK import takes seconds.
    """
    import_sagemaker()
    from sagemaker.deserializers import SimpleBaseDeserializer  # noqa: PLC0415
    from sagemaker.predictor import Predictor  # noqa: PLC0415
    from sagemaker.serializers import IdentitySerializer  # noqa: PLC0415

    class PredictionsDeserializer(SimpleBaseDeserializer):  # type: ignore[misc]
        """JSON when the body is JSON, else the raw bytes (so `invoke` can show what came)."""

        def __init__(self) -> None:
            super().__init__(accept=JSON)

        def deserialize(self, stream: Any, content_type: str) -> Any:
            try:
                body = stream.read()
            finally:
                stream.close()
            try:
                return json.loads(body)
            except ValueError:
                return body

    class ImagePredictor(Predictor):  # type: ignore[misc]
        def __init__(self, endpoint_name: str, sagemaker_session: Any = None, **_: Any) -> None:
            super().__init__(
                endpoint_name,
                sagemaker_session=sagemaker_session,
                # application/x-image: the serving image tells JPEG from PNG itself.
                serializer=IdentitySerializer(content_type="application/x-image"),
                deserializer=PredictionsDeserializer(),
            )

        def classify(self, body: bytes, content_type: str) -> Any:
            """Predictions for one request body (image bytes, or JSON with base64 images)."""
            return self.predict(body, initial_args={"ContentType": content_type})

    return ImagePredictor


# -------------------------------------------------------------------------------------- deploy


def model_data_of(sagemaker_client: Any, job: str) -> str:
    try:
        described = sagemaker_client.describe_training_job(TrainingJobName=job)
    except ClientError as error:
        raise CloudError(f"training job {job} not found: {error}") from None
    if described["TrainingJobStatus"] != "Completed":
        raise CloudError(f"training job {job} is {described['TrainingJobStatus']}, not Completed")
    return str(described["ModelArtifacts"]["S3ModelArtifacts"])


def default_endpoint_name() -> str:
    return unique_name(ENDPOINT_BASE)


def deploy(
    session: Any,
    image_uri: str,
    role: str,
    model_data: str,
    endpoint_name: str,
    instance_type: str,
    wait: bool,
) -> Any:
    """Create model, endpoint config and endpoint; wait for InService. Returns the Predictor."""
    sdk = import_sagemaker()
    model = sdk.model.Model(
        image_uri=image_uri,
        model_data=model_data,
        role=role,
        name=endpoint_name,
        sagemaker_session=session,
        predictor_cls=image_predictor_class(),
    )
    print(f"deploying {model_data}\n  to endpoint {endpoint_name} on {instance_type}")
    local = instance_type in LOCAL_INSTANCE_TYPES  # local mode starts the container in-line
    predictor = model.deploy(
        initial_instance_count=1,
        instance_type=instance_type,
        endpoint_name=endpoint_name,
        wait=local,
    )
    if local:
        status = "InService (local mode)"
    else:
        status = wait_in_service(session.sagemaker_client, endpoint_name) if wait else "Creating"
    print(f"endpoint {endpoint_name}: {status}")
    print(f"invoke:   python scripts/cloud.py invoke --endpoint {endpoint_name} IMAGES...")
    print(f"clean up: python scripts/cloud.py cleanup --endpoint {endpoint_name}")
    return predictor


def wait_in_service(sagemaker_client: Any, endpoint: str, poll_s: int = 30) -> str:
    """Wait until the endpoint is InService (usually minutes); a failure becomes a CloudError.

    boto3's waiter asks before its first pause (the SDK's own wait sleeps first).
    """
    waiter = sagemaker_client.get_waiter("endpoint_in_service")
    try:
        waiter.wait(EndpointName=endpoint, WaiterConfig={"Delay": poll_s, "MaxAttempts": 120})
    except WaiterError:
        described = sagemaker_client.describe_endpoint(EndpointName=endpoint)
        reason = described.get("FailureReason", "no reason given")
        status = described["EndpointStatus"]
        raise CloudError(f"endpoint {endpoint} is {status}: {reason}") from None
    return "InService"


# -------------------------------------------------------------------------------------- invoke


@dataclass(frozen=True)
class Classification:
    label: str
    probability: float

    def __str__(self) -> str:
        return f"{self.label} {self.probability:.3f}"


def image_paths(paths: list[Path]) -> list[Path]:
    """The images among the arguments: files as given, folders searched recursively."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.suffix.lower() in content_types.IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise CloudError(f"{path} does not exist")
    if not found:
        raise CloudError(f"no .jpg, .jpeg or .png images in {' '.join(map(str, paths))}")
    return found


def first_prediction(response: Any) -> Classification | str:
    """The top class from `{"predictions": [{"label", "probability", ...}]}`, or why not."""
    try:
        payload = json.loads(response) if isinstance(response, (bytes, str)) else response
        top = payload["predictions"][0]
        return Classification(str(top["label"]), float(top["probability"]))
    except (ValueError, KeyError, IndexError, TypeError):
        shown = response.decode(errors="replace") if isinstance(response, bytes) else response
        return f"unexpected response {str(shown)[:40]!r}"


def request_body(path: Path, payload: str) -> tuple[bytes, str]:
    """The request body and its content type: the image's bytes, or them base64 in JSON."""
    image = path.read_bytes()
    if payload == "json":
        instances = [{"b64": base64.b64encode(image).decode("ascii")}]
        return json.dumps({"instances": instances}).encode(), JSON
    return image, content_types.of_file(path.name)


def runtime_classify(runtime: Any, endpoint: str, body: bytes, content_type: str) -> Any:
    """The same request without the SDK: boto3's sagemaker-runtime InvokeEndpoint."""
    response = runtime.invoke_endpoint(
        EndpointName=endpoint, ContentType=content_type, Accept=JSON, Body=body
    )
    return response["Body"].read()


def invoke(
    target: AwsTarget, session: Any, endpoint: str, paths: list[Path], payload: str = "image"
) -> int:
    """Classify each image through the Predictor and through boto3; print a table.

    Returns the number of images whose two answers are missing or disagree.
    """
    images = image_paths(paths)
    predictor = image_predictor_class()(endpoint, sagemaker_session=session)
    runtime = target.session.client("sagemaker-runtime")
    width = max(len(str(path)) for path in images)
    print(f"{'image':{width}}  {'Predictor':24}  {'invoke_endpoint':24}")
    problems = 0
    for path in images:
        body, content_type = request_body(path, payload)
        by_sdk = first_prediction(predictor.classify(body, content_type))
        by_boto3 = first_prediction(runtime_classify(runtime, endpoint, body, content_type))
        problems += not (isinstance(by_sdk, Classification) and by_sdk == by_boto3)
        print(f"{path!s:{width}}  {by_sdk!s:24}  {by_boto3!s:24}")
    return problems


# ------------------------------------------------------------------------------------- cleanup


def cleanup(sagemaker_client: Any, endpoint: str) -> list[str]:
    """Delete the endpoint, its endpoint config and its models. Returns what was deleted."""
    try:
        config_name = sagemaker_client.describe_endpoint(EndpointName=endpoint)[
            "EndpointConfigName"
        ]
    except ClientError as error:
        raise CloudError(f"endpoint {endpoint} not found: {error}") from None
    config = sagemaker_client.describe_endpoint_config(EndpointConfigName=config_name)
    models = [variant["ModelName"] for variant in config["ProductionVariants"]]
    sagemaker_client.delete_endpoint(EndpointName=endpoint)
    deleted = [f"endpoint {endpoint}"]
    sagemaker_client.delete_endpoint_config(EndpointConfigName=config_name)
    deleted.append(f"endpoint config {config_name}")
    for model in models:
        sagemaker_client.delete_model(ModelName=model)
        deleted.append(f"model {model}")
    for line in deleted:
        print(f"deleted {line}")
    return deleted
