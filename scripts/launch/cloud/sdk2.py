"""Every call the launch CLI makes into the SageMaker Python SDK 2.x, in one place.

The commands build plans of plain data (`jobs.JobSettings`, `hosting.Hosting`,
`transform.TransformSettings`, ...); the functions here turn a plan into the SDK's objects
and calls: sessions, estimators and tuners, models and predictors, transformers. Another
SDK generation would be another module offering these functions.

The SDK is imported when first used, inside these functions: the import takes seconds,
which a command refused on its flags, or one that never needs the SDK, should not pay.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from launch.cloud import hosting
from launch.cloud.hosting import AsyncSettings, Hosting
from launch.cloud.jobs import (
    CHECKPOINT_LOCAL_PATH,
    TRAIN_JOB_BASE,
    TUNE_JOB_BASE,
    DebuggerSettings,
    EstimatorPlan,
    Monitoring,
    TrainingJobPlan,
    TuningJobPlan,
)
from launch.cloud.settings import LOCAL_INSTANCE_TYPES, AwsTarget, CloudError
from launch.cloud.transform import TransformJobPlan
from launch.search_space import SEARCH_SPACE, Choice, FloatRange
from serving import content_types
from trainer.metrics import METRIC_DEFINITIONS

# ------------------------------------------------------------------------------ the session


class _DropMessages(logging.Filter):
    """Drops SDK log records that mislead in this CLI's context."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


def import_sagemaker() -> Any:
    """Import the SDK late (it takes seconds) and without its v2 deprecation banner."""
    # This project pins SDK 2.x on purpose (3.x removed Estimator, Model and Predictor).
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    # Else one line per config file location the SDK looked in and found nothing.
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    import sagemaker  # noqa: PLC0415

    # HyperparameterTuner.fit reads estimator.model_data for tags, which warns that the
    # estimator has no finished job: true and expected before a tuning job starts.
    logging.getLogger("sagemaker.estimator").addFilter(
        _DropMessages("No finished training job found associated with this estimator")
    )
    return sagemaker


def sdk_defaults_config() -> dict[str, Any]:
    """The user's SDK defaults config, with telemetry opted out unless they chose otherwise.

    `fit()` and `deploy()` otherwise send a telemetry request to an AWS host, which an
    offline machine or an emulator cannot answer.
    """
    import_sagemaker()
    from sagemaker.config import load_sagemaker_config  # noqa: PLC0415

    config: dict[str, Any] = load_sagemaker_config() or {}
    config.setdefault("SchemaVersion", "1.0")
    modules = config.setdefault("SageMaker", {}).setdefault("PythonSDK", {})
    modules.setdefault("Modules", {}).setdefault("TelemetryOptOut", True)
    return config


def sagemaker_session(target: AwsTarget, local: str | None = None) -> Any:
    """A SageMaker SDK session on the target (a LocalSession for `--local`)."""
    sdk = import_sagemaker()
    config = sdk_defaults_config()
    if local:
        from sagemaker.local import LocalSession  # noqa: PLC0415

        return LocalSession(
            boto_session=target.session, default_bucket=target.bucket, sagemaker_config=config
        )
    return sdk.Session(
        boto_session=target.session, default_bucket=target.bucket, sagemaker_config=config
    )


# ------------------------------------------------------------------------- training and tuning


def tuning_ranges() -> dict[Any, Any]:
    """launch.search_space as SDK parameter ranges."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter  # noqa: PLC0415

    ranges: dict[Any, Any] = {}
    for name, space in SEARCH_SPACE.items():
        if isinstance(space, FloatRange):
            scaling = "Logarithmic" if space.log else "Linear"
            ranges[name] = ContinuousParameter(space.low, space.high, scaling_type=scaling)
        elif isinstance(space, Choice):
            ranges[name] = CategoricalParameter([str(value) for value in space.values])
        else:
            raise TypeError(f"unsupported search space entry {name}: {space!r}")
    return ranges


def channel_sources(inputs: dict[str, str], input_mode: str) -> dict[str, Any]:
    """The channels as the estimator takes them: plain URIs, or TrainingInputs for FastFile."""
    if input_mode == "File" or next(iter(inputs.values()), "").startswith("file://"):
        return dict(inputs)
    from sagemaker.inputs import TrainingInput  # noqa: PLC0415

    return {name: TrainingInput(uri, input_mode=input_mode) for name, uri in inputs.items()}


def make_estimator(session: Any, plan: EstimatorPlan, **extra: Any) -> Any:
    """A generic Estimator running the training image, reading the project's metric lines."""
    from sagemaker.estimator import Estimator  # noqa: PLC0415

    settings = plan.settings
    spot: dict[str, Any] = {}
    if settings.spot:
        spot = {
            "use_spot_instances": True,
            "max_wait": plan.max_wait_s,
            # Spot jobs can be interrupted: the image resumes from these synced checkpoints.
            "checkpoint_s3_uri": plan.checkpoint_uri,
            "checkpoint_local_path": CHECKPOINT_LOCAL_PATH,
        }
    return Estimator(
        image_uri=settings.image_uri,
        role=settings.role,
        instance_count=settings.instance_count,
        instance_type=settings.instance_type,
        max_run=settings.max_run_s,
        output_path=plan.output_path,
        base_job_name=TRAIN_JOB_BASE,
        hyperparameters=dict[str, Any](settings.hyperparameters),
        metric_definitions=METRIC_DEFINITIONS,
        sagemaker_session=session,
        **spot,
        **extra,
    )


def start_tuning_job(session: Any, plan: TuningJobPlan) -> None:
    """Start a tuning job without waiting for it."""
    from sagemaker.tuner import HyperparameterTuner  # noqa: PLC0415

    tuning = plan.settings
    tuner = HyperparameterTuner(
        make_estimator(session, plan.estimator),
        objective_metric_name=plan.objective.metric,
        objective_type=plan.objective.direction,
        hyperparameter_ranges=tuning_ranges(),
        metric_definitions=METRIC_DEFINITIONS,
        strategy="Bayesian",
        max_jobs=tuning.max_jobs,
        max_parallel_jobs=tuning.max_parallel_jobs,
        early_stopping_type="Auto" if tuning.early_stopping else "Off",
        base_tuning_job_name=TUNE_JOB_BASE,
    )
    inputs = channel_sources(plan.estimator.inputs, plan.estimator.settings.input_mode)
    tuner.fit(inputs=inputs, job_name=plan.estimator.name, wait=False)


def with_losses_interval(rule: dict[str, Any], interval: dict[str, Any]) -> dict[str, Any]:
    """A built-in rule config whose `losses` collection uses the hook's save interval.

    The loss rules ask for `losses` every 500 steps; the SDK would send that next to the
    hook's own `losses` entry, two configurations of one collection.
    """
    for collection in rule.get("CollectionConfigurations", []):
        if collection["CollectionName"] == "losses":
            collection["CollectionParameters"] = {**collection["CollectionParameters"], **interval}
    return rule


def debugger_arguments(monitoring: Monitoring, debugger: DebuggerSettings) -> dict[str, Any]:
    """Debugger hook (losses), the five training rules, and system profiling with its report."""
    from sagemaker.debugger import (  # noqa: PLC0415
        CollectionConfig,
        DebuggerHookConfig,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        rule_configs,
    )

    interval: dict[str, Any] = {"save_interval": str(debugger.save_interval)}
    rules = [
        with_losses_interval(rule, interval)
        for rule in (
            rule_configs.loss_not_decreasing(),
            rule_configs.overfit(),
            rule_configs.overtraining(),
            rule_configs.vanishing_gradient(),
            rule_configs.poor_weight_initialization(),
        )
    ]
    return {
        "debugger_hook_config": DebuggerHookConfig(
            s3_output_path=monitoring.debugger_uri,
            hook_parameters=interval,
            collection_configs=[CollectionConfig(name="losses", parameters=interval)],
        ),
        "rules": [Rule.sagemaker(rule) for rule in rules]
        + [ProfilerRule.sagemaker(rule_configs.ProfilerReport())],
        # Framework profiling is deprecated from PyTorch 2.0; system monitoring needs no code.
        "profiler_config": ProfilerConfig(
            s3_output_path=monitoring.profiler_uri,
            system_monitor_interval_millis=debugger.system_monitor_interval_ms,
        ),
    }


def monitoring_arguments(monitoring: Monitoring | None) -> dict[str, Any]:
    """The Estimator's keywords for a job's monitoring: TensorBoard output always (the image
    writes its scalars there), plus Debugger's hook, rules and profiler unless it is off.

    SageMaker Debugger is closed to new AWS customers, so without it the job sends neither
    hook nor rules, and disables the profiler (the SDK still sends
    `ProfilerConfig: {DisableProfiler: true}`)."""
    if monitoring is None:  # local mode: plain `docker run`, nothing to monitor
        return {}
    from sagemaker.debugger import TensorBoardOutputConfig  # noqa: PLC0415

    tensorboard = TensorBoardOutputConfig(
        s3_output_path=monitoring.tensorboard_uri,
        container_local_output_path=monitoring.tensorboard_local_path,
    )
    if monitoring.debugger is None:
        return {
            "debugger_hook_config": False,
            "disable_profiler": True,
            "tensorboard_output_config": tensorboard,
        }
    debugger = debugger_arguments(monitoring, monitoring.debugger)
    return {**debugger, "tensorboard_output_config": tensorboard}


def start_training_job(session: Any, plan: TrainingJobPlan) -> Any:
    """Start a training job without waiting for it; returns the handle to wait on."""
    estimator = make_estimator(session, plan.estimator, **monitoring_arguments(plan.monitoring))
    inputs = channel_sources(plan.estimator.inputs, plan.estimator.settings.input_mode)
    estimator.fit(inputs=inputs, job_name=plan.name, wait=False)
    return estimator


def wait_for_training_job(estimator: Any) -> None:
    """Stream the job's CloudWatch log until it ends; a failed job becomes a CloudError."""
    from sagemaker.exceptions import UnexpectedStatusException  # noqa: PLC0415

    try:
        estimator.latest_training_job.wait(logs="All")
    except UnexpectedStatusException as error:
        raise CloudError(str(error).splitlines()[0]) from None
    print()  # the SDK's progress dots end without a newline


def debugger_artifacts_path(estimator: Any) -> str:
    return str(estimator.latest_job_debugger_artifacts_path())


# ------------------------------------------------------------------------------------ hosting


def async_config(settings: AsyncSettings, instance_type: str) -> Any:
    sdk = import_sagemaker()
    topics = {"SuccessTopic": settings.success_topic, "ErrorTopic": settings.error_topic}
    return sdk.async_inference.AsyncInferenceConfig(
        output_path=settings.output_uri,
        failure_path=settings.failure_uri,
        max_concurrent_invocations_per_instance=hosting.requests_per_instance(instance_type)
        if settings.max_concurrent_invocations is None
        else settings.max_concurrent_invocations,
        notification_config={key: arn for key, arn in topics.items() if arn} or None,
    )


def deploy_arguments(plan: Hosting, instance_type: str | None) -> dict[str, Any]:
    """Model.deploy's keywords for the hosting mode."""
    sdk = import_sagemaker()
    if plan.serverless:
        return {
            "serverless_inference_config": sdk.serverless.ServerlessInferenceConfig(
                memory_size_in_mb=plan.serverless.memory_mb,
                max_concurrency=plan.serverless.max_concurrency,
            )
        }
    if instance_type is None:
        raise CloudError("deploy needs --instance-type unless --serverless")
    arguments: dict[str, Any] = {
        "initial_instance_count": plan.initial_instances,
        "instance_type": instance_type,
    }
    if plan.asynchronous:
        arguments["async_inference_config"] = async_config(plan.asynchronous, instance_type)
    return arguments


def make_model(
    session: Any, image_uri: str, role: str, model_data: str, name: str, plan: Hosting
) -> Any:
    """A Model of the serving image, or a MultiDataModel over a prefix of archives."""
    sdk = import_sagemaker()
    common = {
        "image_uri": image_uri,
        "role": role,
        "name": name,
        "sagemaker_session": session,
        "env": hosting.container_environment(plan.mode, plan.multi_model),
        "predictor_cls": image_predictor_class(),
    }
    if plan.multi_model:
        from sagemaker.multidatamodel import MultiDataModel  # noqa: PLC0415

        return MultiDataModel(model_data_prefix=model_data, **common)
    return sdk.model.Model(model_data=model_data, **common)


def deploy_model(
    session: Any,
    image_uri: str,
    role: str,
    model_data: str,
    endpoint_name: str,
    instance_type: str | None,
    plan: Hosting,
) -> None:
    """Create the model, endpoint config and endpoint; local mode waits for the container."""
    model = make_model(session, image_uri, role, model_data, endpoint_name, plan)
    local = instance_type in LOCAL_INSTANCE_TYPES  # local mode starts the container in-line
    model.deploy(endpoint_name=endpoint_name, wait=local, **deploy_arguments(plan, instance_type))


def image_predictor_class() -> type:
    """A Predictor that sends image bytes and parses the serving image's JSON predictions."""
    import_sagemaker()
    from sagemaker.deserializers import SimpleBaseDeserializer  # noqa: PLC0415
    from sagemaker.predictor import Predictor  # noqa: PLC0415
    from sagemaker.serializers import IdentitySerializer  # noqa: PLC0415

    class PredictionsDeserializer(SimpleBaseDeserializer):  # type: ignore[misc]
        """JSON when the body is JSON, else the raw bytes (so `invoke` can show what came)."""

        def __init__(self) -> None:
            super().__init__(accept=content_types.JSON)

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
                serializer=IdentitySerializer(content_type=content_types.X_IMAGE),
                deserializer=PredictionsDeserializer(),
            )

        def classify(self, body: bytes, content_type: str, target_model: str | None = None) -> Any:
            """Predictions for one request body (image bytes, or JSON with base64 images).

            `target_model`: the archive, relative to a multi-model endpoint's prefix.
            """
            return self.predict(
                body, initial_args={"ContentType": content_type}, target_model=target_model
            )

    return ImagePredictor


def predictor(session: Any, endpoint: str) -> Any:
    """The Predictor of a real-time endpoint: `classify(body, content_type, target_model)`."""
    return image_predictor_class()(endpoint, sagemaker_session=session)


def async_predictor(session: Any, endpoint: str) -> Any:
    """The SDK's AsyncPredictor of an asynchronous endpoint (it uploads each input itself)."""
    sdk = import_sagemaker()
    return sdk.predictor_async.AsyncPredictor(predictor(session, endpoint))


# What one look at an asynchronous request's response finds.
PENDING, RESULT, FAILURE = "pending", "result", "failure"


def async_result(response: Any) -> tuple[str, Any]:
    """One look at an AsyncInferenceResponse: (PENDING, None), (RESULT, the deserialized
    predictions) or (FAILURE, the failure object's text)."""
    from sagemaker.exceptions import (  # noqa: PLC0415
        AsyncInferenceModelError,
        ObjectNotExistedError,
    )

    try:
        return RESULT, response.get_result()
    except ObjectNotExistedError:
        return PENDING, None
    except AsyncInferenceModelError as error:
        return FAILURE, error.kwargs["message"]  # the failure object, deserialized


# -------------------------------------------------------------------------------- transform


def start_transform_job(session: Any, plan: TransformJobPlan) -> None:
    """Start a Batch Transform job without waiting for it."""
    sdk = import_sagemaker()
    settings = plan.settings
    model = sdk.model.Model(
        image_uri=plan.image_uri,
        model_data=plan.model_data,
        role=plan.role,
        name=plan.name,
        sagemaker_session=session,
    )
    transformer = model.transformer(
        instance_count=settings.instance_count,
        instance_type=settings.instance_type,
        strategy=plan.batch_strategy,
        output_path=plan.output_uri,
        max_concurrent_transforms=settings.concurrent_transforms,
        max_payload=settings.max_payload_mb,
        accept=content_types.JSON,
        env=settings.environment(),
    )
    transformer.transform(
        plan.input_uri,
        data_type="S3Prefix",
        content_type=plan.content_type,
        split_type=None,  # one request per object: the whole image
        job_name=plan.name,
        wait=False,
        logs=False,
        model_client_config={
            "InvocationsTimeoutInSeconds": settings.invocation_timeout_s,
            "InvocationsMaxRetries": settings.max_retries,
        },
    )
