"""Every call the launch CLI makes into the SageMaker Python SDK 3.x, in one place: the
counterpart of `sdk2`, with the same functions over the same plans.

3.x's high-level classes cannot carry these plans: ModelTrainer has no Debugger hook, rules
or profiler; its tuner carries neither the trainer's metric definitions nor checkpoints;
ModelBuilder has no multi-model mode; and both validate the role with an IAM call before
anything else. Its typed resources (`sagemaker.core.resources`: TrainingJob,
HyperParameterTuningJob, Model, EndpointConfig, Endpoint, TransformJob) expose every field
of the API, and v2's Debugger helpers live on in `sagemaker.core.debugger`. So each request
is written here as the API spells it, the same request 2.x's classes send
(tests/cloud/test_sdk_generations.py compares the two), and handed to the resource as its
typed shapes.

The SDK is imported when first used, inside these functions, as in `sdk2`: the import takes
seconds, which a command refused on its flags should not pay.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from launch.cloud import hosting
from launch.cloud.hosting import AsyncSettings, Hosting
from launch.cloud.jobs import (
    CHECKPOINT_LOCAL_PATH,
    DebuggerSettings,
    EstimatorPlan,
    Monitoring,
    TrainingJobPlan,
    TuningJobPlan,
)
from launch.cloud.sdk2 import FAILURE, PENDING, RESULT, with_losses_interval
from launch.cloud.settings import AwsTarget, CloudError, s3_object
from launch.cloud.transform import TransformJobPlan
from launch.search_space import SEARCH_SPACE, Choice, FloatRange
from serving import content_types
from trainer.metrics import METRIC_DEFINITIONS

VOLUME_SIZE_GB = 30  # 2.x's Estimator default, sent by both generations
VARIANT = "AllTraffic"  # the one production variant, named as 2.x names it
# Where an asynchronous request's input goes, as 2.x's AsyncPredictor puts it.
ASYNC_INPUTS = "async-endpoint-inputs"

# ------------------------------------------------------------------------------ the session


@dataclass(frozen=True)
class Session:
    """What the commands use of a session (2.x's `sagemaker.Session` has the same names)."""

    boto_session: boto3.Session
    sagemaker_client: Any
    region: str
    bucket: str | None


def sagemaker_session(target: AwsTarget, local: str | None = None) -> Session:
    """The target's boto3 session and SageMaker client; the resources are given the session
    on every call, so nothing depends on sagemaker-core's process-wide default client."""
    # Else one INFO line per config file location the SDK looked in and found nothing.
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    if local:
        raise CloudError(
            "--local needs SageMaker Python SDK 2.x: 3.x's local mode never runs the image's "
            "`train` (see docs/sagemaker.md)"
        )
    return Session(
        boto_session=target.session,
        sagemaker_client=target.session.client("sagemaker"),
        region=target.region,
        bucket=target.bucket,
    )


# sagemaker-core (2.27) spells a shape's fields back in the API's case by title-casing them,
# with a table of exceptions: memory_size_in_mb would go out as MemorySizeInMb, which the
# API refuses (a serverless endpoint config could not be created).
API_SPELLINGS = {"memory_size_in_mb": "MemorySizeInMB"}


def shape(name: str, request: dict[str, Any]) -> Any:
    """A request part, spelled as the API spells it, as sagemaker-core's typed shape."""
    from sagemaker.core import shapes  # noqa: PLC0415
    from sagemaker.core.utils import utils  # noqa: PLC0415
    from sagemaker.core.utils.code_injection.codec import transform  # noqa: PLC0415

    utils.SPECIAL_SNAKE_TO_PASCAL_MAPPINGS.update(API_SPELLINGS)
    return getattr(shapes, name)(**transform(request, name))


def shapes_of(name: str, requests: list[dict[str, Any]]) -> list[Any]:
    return [shape(name, request) for request in requests]


@contextmanager
def answers_read() -> Iterator[None]:
    """sagemaker-core reads back what it creates and validates SageMaker's answer against
    the API's shapes; an answer it cannot read becomes one line, not a traceback."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        yield
    except ValidationError as error:
        problem = str(error).splitlines()
        raise CloudError(
            f"sagemaker-core could not read SageMaker's answer ({problem[0]}: {problem[1]})"
        ) from None


def located(session: Session) -> dict[str, Any]:
    """The keywords that send a resource's calls through this session."""
    return {"session": session.boto_session, "region": session.region}


# ------------------------------------------------------------------------- training and tuning


def parameter_ranges() -> dict[str, list[dict[str, Any]]]:
    """launch.search_space as the API's ParameterRanges (the values as 2.x writes them)."""
    continuous, categorical = [], []
    for name, space in SEARCH_SPACE.items():
        if isinstance(space, FloatRange):
            continuous.append(
                {
                    "Name": name,
                    "MinValue": str(space.low),
                    "MaxValue": str(space.high),
                    "ScalingType": "Logarithmic" if space.log else "Linear",
                }
            )
        elif isinstance(space, Choice):
            categorical.append({"Name": name, "Values": [str(v) for v in space.values]})
        else:
            raise TypeError(f"unsupported search space entry {name}: {space!r}")
    return {"ContinuousParameterRanges": continuous, "CategoricalParameterRanges": categorical}


def channels(plan: EstimatorPlan) -> list[dict[str, Any]]:
    """Every channel whole on every host (FullyReplicated); FastFile named per channel."""
    mode = plan.settings.input_mode
    return [
        {
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": uri,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            **({} if mode == "File" else {"InputMode": mode}),
            "ChannelName": name,
        }
        for name, uri in plan.inputs.items()
    ]


def algorithm(plan: EstimatorPlan) -> dict[str, Any]:
    return {
        "TrainingInputMode": "File",  # the channels' own mode wins
        "TrainingImage": plan.settings.image_uri,
        "MetricDefinitions": METRIC_DEFINITIONS,
    }


def resources(plan: EstimatorPlan) -> dict[str, Any]:
    settings = plan.settings
    return {
        "VolumeSizeInGB": VOLUME_SIZE_GB,
        "InstanceCount": settings.instance_count,
        "InstanceType": settings.instance_type,
    }


def stopping(plan: EstimatorPlan) -> dict[str, Any]:
    limits = {"MaxRuntimeInSeconds": plan.settings.max_run_s}
    return limits | ({"MaxWaitTimeInSeconds": plan.max_wait_s} if plan.settings.spot else {})


def checkpoints(plan: EstimatorPlan) -> dict[str, str]:
    return {"S3Uri": plan.checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH}


def spot(plan: EstimatorPlan) -> dict[str, Any]:
    """Spot jobs can be interrupted: the image resumes from these synced checkpoints."""
    if not plan.settings.spot:
        return {}
    return {
        "enable_managed_spot_training": True,
        "checkpoint_config": shape("CheckpointConfig", checkpoints(plan)),
    }


def start_tuning_job(session: Session, plan: TuningJobPlan) -> None:
    """Start a tuning job without waiting for it."""
    from sagemaker.core.resources import HyperParameterTuningJob  # noqa: PLC0415

    estimator, tuning = plan.estimator, plan.settings
    config = {
        "Strategy": "Bayesian",
        "ResourceLimits": {
            "MaxNumberOfTrainingJobs": tuning.max_jobs,
            "MaxParallelTrainingJobs": tuning.max_parallel_jobs,
        },
        "TrainingJobEarlyStoppingType": "Auto" if tuning.early_stopping else "Off",
        "HyperParameterTuningJobObjective": {
            "Type": plan.objective.direction,
            "MetricName": plan.objective.metric,
        },
        "ParameterRanges": parameter_ranges(),
    }
    definition: dict[str, Any] = {
        "StaticHyperParameters": dict(estimator.settings.hyperparameters),
        "RoleArn": estimator.settings.role,
        "OutputDataConfig": {"S3OutputPath": estimator.output_path},
        "StoppingCondition": stopping(estimator),
        "HyperParameterTuningResourceConfig": resources(estimator),
        "AlgorithmSpecification": algorithm(estimator),
        "InputDataConfig": channels(estimator),
    }
    if estimator.settings.spot:
        definition["EnableManagedSpotTraining"] = True
        definition["CheckpointConfig"] = checkpoints(estimator)
    with answers_read():
        HyperParameterTuningJob.create(
            hyper_parameter_tuning_job_name=estimator.name,
            hyper_parameter_tuning_job_config=shape("HyperParameterTuningJobConfig", config),
            training_job_definition=shape("HyperParameterTrainingJobDefinition", definition),
            **located(session),
        )


def as_sent(rule: Any, region: str) -> Any:
    """A built-in rule as 2.x's Estimator sends it: the region's evaluator image, no
    instance type or volume of its own."""
    from sagemaker.core.debugger import get_rule_container_image_uri  # noqa: PLC0415

    rule.image_uri = get_rule_container_image_uri(rule.name, region)
    rule.instance_type = rule.volume_size_in_gb = None
    return rule


def built_in_rules(region: str, interval: dict[str, str]) -> list[Any]:
    """The five training rules, their `losses` saved at the hook's interval."""
    from sagemaker.core.debugger import Rule  # noqa: PLC0415
    from sagemaker.core.debugger import rule_configs as configs  # noqa: PLC0415

    return [
        as_sent(Rule.sagemaker(with_losses_interval(rule, interval)), region)
        for rule in (
            configs.loss_not_decreasing(),
            configs.overfit(),
            configs.overtraining(),
            configs.vanishing_gradient(),
            configs.poor_weight_initialization(),
        )
    ]


def collections(hook_losses: dict[str, Any], rules: list[Any]) -> list[dict[str, Any]]:
    """The hook's collections: its own `losses` and each rule's, one entry per name."""
    by_name = {"losses": hook_losses}
    for rule in rules:
        for collection in rule.collection_configs:
            by_name.setdefault(collection.name, collection._to_request_dict())
    return list(by_name.values())


def debugger_arguments(
    session: Session, monitoring: Monitoring, debugger: DebuggerSettings
) -> dict[str, Any]:
    """Debugger hook (losses), the five training rules, and system profiling with its report."""
    from sagemaker.core.debugger import ProfilerRule, rule_configs  # noqa: PLC0415

    interval = {"save_interval": str(debugger.save_interval)}
    rules = built_in_rules(session.region, interval)
    profiler_rule = as_sent(ProfilerRule.sagemaker(rule_configs.ProfilerReport()), session.region)
    hook = {
        "S3OutputPath": monitoring.debugger_uri,
        "HookParameters": interval,
        "CollectionConfigurations": collections(
            {"CollectionName": "losses", "CollectionParameters": interval}, rules
        ),
    }
    return {
        "debug_hook_config": shape("DebugHookConfig", hook),
        "debug_rule_configurations": shapes_of(
            "DebugRuleConfiguration", [rule.to_debugger_rule_config_dict() for rule in rules]
        ),
        "profiler_rule_configurations": [
            shape("ProfilerRuleConfiguration", profiler_rule.to_profiler_rule_config_dict())
        ],
        # Framework profiling is deprecated from PyTorch 2.0; system monitoring needs no code.
        "profiler_config": shape(
            "ProfilerConfig",
            {
                "S3OutputPath": monitoring.profiler_uri,
                "DisableProfiler": False,
                "ProfilingIntervalInMilliseconds": debugger.system_monitor_interval_ms,
            },
        ),
    }


def monitoring_arguments(session: Session, monitoring: Monitoring) -> dict[str, Any]:
    """TensorBoard output always (the image writes its scalars there), plus Debugger's hook,
    rules and profiler unless it is off; off, the profiler is disabled, as 2.x sends it."""
    tensorboard = shape(
        "TensorBoardOutputConfig",
        {
            "S3OutputPath": monitoring.tensorboard_uri,
            "LocalPath": monitoring.tensorboard_local_path,
        },
    )
    if monitoring.debugger is None:
        return {
            "tensor_board_output_config": tensorboard,
            "profiler_config": shape("ProfilerConfig", {"DisableProfiler": True}),
        }
    debugger = debugger_arguments(session, monitoring, monitoring.debugger)
    return {**debugger, "tensor_board_output_config": tensorboard}


def start_training_job(session: Session, plan: TrainingJobPlan) -> Any:
    """Start a training job without waiting for it; returns the TrainingJob to wait on."""
    from sagemaker.core.resources import TrainingJob  # noqa: PLC0415

    if plan.monitoring is None:  # only local mode plans no monitoring, refused above
        raise CloudError("a SageMaker training job needs its monitoring plan")
    estimator = plan.estimator
    hyperparameters = dict(estimator.settings.hyperparameters)
    with answers_read():
        return TrainingJob.create(
            training_job_name=plan.name,
            role_arn=estimator.settings.role,
            algorithm_specification=shape("AlgorithmSpecification", algorithm(estimator)),
            output_data_config=shape("OutputDataConfig", {"S3OutputPath": estimator.output_path}),
            input_data_config=shapes_of("Channel", channels(estimator)),
            resource_config=shape("ResourceConfig", resources(estimator)),
            stopping_condition=shape("StoppingCondition", stopping(estimator)),
            **({"hyper_parameters": hyperparameters} if hyperparameters else {}),
            **spot(estimator),
            **monitoring_arguments(session, plan.monitoring),
            **located(session),
        )


def wait_for_training_job(job: Any) -> None:
    """Wait until the job ends, with its CloudWatch log; a failed job becomes a CloudError."""
    from sagemaker.core.utils.exceptions import FailedStatusError  # noqa: PLC0415

    try:
        job.wait(logs=True)
    except FailedStatusError as error:
        raise CloudError(str(error).splitlines()[0]) from None


def debugger_artifacts_path(job: Any) -> str:
    """Where the hook writes: the hook's S3 path under the job's name, as 2.x reports it."""
    return (
        f"{job.debug_hook_config.s3_output_path.rstrip('/')}/{job.training_job_name}/debug-output"
    )


# ------------------------------------------------------------------------------------ hosting


def async_request(settings: AsyncSettings, instance_type: str) -> dict[str, Any]:
    topics = {"SuccessTopic": settings.success_topic, "ErrorTopic": settings.error_topic}
    notification = {key: arn for key, arn in topics.items() if arn}
    concurrency = (
        hosting.requests_per_instance(instance_type)
        if settings.max_concurrent_invocations is None
        else settings.max_concurrent_invocations
    )
    output = {"S3OutputPath": settings.output_uri, "S3FailurePath": settings.failure_uri}
    return {
        "OutputConfig": output | ({"NotificationConfig": notification} if notification else {}),
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
    }


def production_variant(plan: Hosting, model: str, instance_type: str | None) -> dict[str, Any]:
    """The endpoint's one variant: instances, or a serverless config."""
    variant: dict[str, Any] = {
        "VariantName": VARIANT,
        "ModelName": model,
        "InitialVariantWeight": 1,
    }
    if plan.serverless:
        serverless = plan.serverless
        return variant | {
            "ServerlessConfig": {
                "MemorySizeInMB": serverless.memory_mb,
                "MaxConcurrency": serverless.max_concurrency,
            }
        }
    if instance_type is None:
        raise CloudError("deploy needs --instance-type unless --serverless")
    return variant | {
        "InitialInstanceCount": plan.initial_instances,
        "InstanceType": instance_type,
    }


def container(image_uri: str, model_data: str, environment: dict[str, str], multi: bool) -> Any:
    """The serving image over one archive, or (multi-model) over a prefix of archives."""
    request = {"Image": image_uri, "Environment": environment, "ModelDataUrl": model_data}
    return shape("ContainerDefinition", request | ({"Mode": "MultiModel"} if multi else {}))


def deploy_model(
    session: Session,
    image_uri: str,
    role: str,
    model_data: str,
    endpoint_name: str,
    instance_type: str | None,
    plan: Hosting,
) -> None:
    """Create the model, endpoint config and endpoint, all named after the endpoint."""
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model  # noqa: PLC0415

    environment = hosting.container_environment(plan.mode, plan.multi_model)
    variant = production_variant(plan, endpoint_name, instance_type)
    asynchronous = {}
    if plan.asynchronous and instance_type is not None:
        request = async_request(plan.asynchronous, instance_type)
        asynchronous["async_inference_config"] = shape("AsyncInferenceConfig", request)
    with answers_read():
        Model.create(
            model_name=endpoint_name,
            execution_role_arn=role,
            primary_container=container(image_uri, model_data, environment, plan.multi_model),
            **located(session),
        )
        EndpointConfig.create(
            endpoint_config_name=endpoint_name,
            production_variants=[shape("ProductionVariant", variant)],
            **asynchronous,
            **located(session),
        )
        Endpoint.create(
            endpoint_name=endpoint_name, endpoint_config_name=endpoint_name, **located(session)
        )


class ImagePredictor:
    """Sends image bytes (or JSON) to a real-time endpoint through its `Endpoint` resource and
    parses the serving image's JSON predictions (the raw bytes when the body is not JSON)."""

    def __init__(self, session: Session, endpoint: str) -> None:
        from sagemaker.core.resources import Endpoint  # noqa: PLC0415

        with answers_read():
            self.endpoint = Endpoint.get(endpoint_name=endpoint, **located(session))
        self.session = session

    def classify(self, body: bytes, content_type: str, target_model: str | None = None) -> Any:
        """Predictions for one request body; `target_model`: a multi-model endpoint's archive."""
        answer = self.endpoint.invoke(
            body=body,
            content_type=content_type,
            accept=content_types.JSON,
            **({"target_model": target_model} if target_model else {}),
            **located(self.session),
        )
        raw = answer.body.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw


def predictor(session: Session, endpoint: str) -> ImagePredictor:
    """The predictor of a real-time endpoint: `classify(body, content_type, target_model)`."""
    return ImagePredictor(session, endpoint)


@dataclass(frozen=True)
class AsyncResponse:
    """Where one asynchronous request's result or failure will appear."""

    s3: Any
    output_uri: str
    failure_uri: str | None


class AsyncPredictor:
    """2.x's AsyncPredictor on the `Endpoint` resource: each input goes to the bucket, then
    InvokeEndpointAsync; the result is read from S3 when asked for."""

    def __init__(self, session: Session, endpoint: str) -> None:
        from sagemaker.core.resources import Endpoint  # noqa: PLC0415

        if session.bucket is None:
            raise CloudError("asynchronous requests need a bucket for their inputs: --bucket")
        with answers_read():
            self.endpoint = Endpoint.get(endpoint_name=endpoint, **located(session))
        self.session = session
        self.s3 = session.boto_session.client("s3")
        self.inputs = f"{ASYNC_INPUTS}/{endpoint}-{datetime.now(UTC):%y%m%d-%H%M}"

    def upload(self, body: bytes) -> str:
        """The input object, named and typed as 2.x's AsyncPredictor names and types it."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")[:-3]
        key = f"{self.inputs}/{stamp}-{uuid.uuid4()}"
        self.s3.put_object(
            Bucket=self.session.bucket, Key=key, Body=body, ContentType=content_types.X_IMAGE
        )
        return f"s3://{self.session.bucket}/{key}"

    def predict_async(self, data: bytes, initial_args: dict[str, Any]) -> AsyncResponse:
        answer = self.endpoint.invoke_async(
            input_location=self.upload(data),
            content_type=initial_args["ContentType"],
            accept=content_types.JSON,
            invocation_timeout_seconds=initial_args["InvocationTimeoutSeconds"],
            **located(self.session),
        )
        failure = getattr(answer, "failure_location", None)
        return AsyncResponse(self.s3, answer.output_location, failure if failure else None)


def async_predictor(session: Session, endpoint: str) -> AsyncPredictor:
    return AsyncPredictor(session, endpoint)


def async_result(response: AsyncResponse) -> tuple[str, Any]:
    """One look: (PENDING, None), (RESULT, the parsed predictions) or (FAILURE, its text)."""
    output = s3_object(response.s3, response.output_uri)
    if output is not None:
        try:
            return RESULT, json.loads(output)
        except ValueError:
            return RESULT, output
    failed = s3_object(response.s3, response.failure_uri) if response.failure_uri else None
    return (PENDING, None) if failed is None else (FAILURE, failed.decode(errors="replace"))


# -------------------------------------------------------------------------------- transform


def start_transform_job(session: Session, plan: TransformJobPlan) -> None:
    """Start a Batch Transform job without waiting for it (its model named after it)."""
    from sagemaker.core.resources import Model, TransformJob  # noqa: PLC0415

    settings = plan.settings
    with answers_read():
        Model.create(
            model_name=plan.name,
            execution_role_arn=plan.role,
            primary_container=container(plan.image_uri, plan.model_data, {}, multi=False),
            **located(session),
        )
        source = {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": plan.input_uri}}
        TransformJob.create(
            transform_job_name=plan.name,
            model_name=plan.name,
            # one request per object: the whole image (no SplitType)
            transform_input=shape(
                "TransformInput", {"DataSource": source, "ContentType": plan.content_type}
            ),
            transform_output=shape(
                "TransformOutput", {"S3OutputPath": plan.output_uri, "Accept": content_types.JSON}
            ),
            transform_resources=shape(
                "TransformResources",
                {"InstanceCount": settings.instance_count, "InstanceType": settings.instance_type},
            ),
            batch_strategy=plan.batch_strategy,
            max_concurrent_transforms=settings.concurrent_transforms,
            max_payload_in_mb=settings.max_payload_mb,
            environment=settings.environment(),
            model_client_config=shape(
                "ModelClientConfig",
                {
                    "InvocationsTimeoutInSeconds": settings.invocation_timeout_s,
                    "InvocationsMaxRetries": settings.max_retries,
                },
            ),
            **located(session),
        )
