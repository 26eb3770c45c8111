"""Autoscaling of an endpoint variant with Application Auto Scaling (and one CloudWatch alarm).

Real-time endpoints track invocations per instance. Asynchronous endpoints track their
queue (backlog per instance) and may scale to zero; target tracking cannot start the
first instance (a backlog per instance is undefined with none), so a step policy driven
by SageMaker's `HasBacklogWithoutCapacity` metric adds it. See the SageMaker guide's
pages on endpoint autoscaling and on autoscaling an asynchronous endpoint.
"""

from __future__ import annotations

from typing import Any

from launch.cloud.hosting import ScalingSettings

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRICS_NAMESPACE = "AWS/SageMaker"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"  # predefined, per minute
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
NO_CAPACITY_METRIC = "HasBacklogWithoutCapacity"  # 1 while requests wait and no instance runs

# Add capacity within a minute of a surge; remove it only after five quiet minutes, so a
# short lull does not shed an instance that a model load (minutes) would have to replace.
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 300
# Two one-minute periods with a backlog and no instance start the first instance.
ALARM_PERIOD_S = 60
ALARM_EVALUATION_PERIODS = 2


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def alarm_name(endpoint: str) -> str:
    """The CloudWatch alarm `deploy` creates to scale an asynchronous endpoint from zero."""
    return f"{endpoint}-{NO_CAPACITY_METRIC}"


def endpoint_dimension(endpoint: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}]


def target_tracking(target: float, metric: dict[str, Any]) -> dict[str, Any]:
    return {
        "TargetValue": float(target),
        **metric,
        "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
        "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
    }


def invocations_metric() -> dict[str, Any]:
    return {"PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC}}


def backlog_metric(endpoint: str) -> dict[str, Any]:
    return {
        "CustomizedMetricSpecification": {
            "MetricName": BACKLOG_METRIC,
            "Namespace": METRICS_NAMESPACE,
            "Dimensions": endpoint_dimension(endpoint),
            "Statistic": "Average",
        }
    }


class Scaler:
    """Application Auto Scaling and CloudWatch calls for one endpoint variant."""

    def __init__(self, session: Any, endpoint: str, variant: str) -> None:
        self.autoscaling = session.client("application-autoscaling")
        self.cloudwatch = session.client("cloudwatch")
        self.endpoint = endpoint
        self.resource = {
            "ServiceNamespace": NAMESPACE,
            "ResourceId": resource_id(endpoint, variant),
            "ScalableDimension": DIMENSION,
        }

    def register(self, scaling: ScalingSettings) -> None:
        self.autoscaling.register_scalable_target(
            **self.resource,
            MinCapacity=scaling.min_instances,
            MaxCapacity=scaling.max_instances,
        )

    def put_target_tracking(self, name: str, configuration: dict[str, Any]) -> None:
        self.autoscaling.put_scaling_policy(
            PolicyName=name,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=configuration,
            **self.resource,
        )

    def scale_from_zero(self) -> None:
        """One more instance whenever requests wait and none is running."""
        policy = self.autoscaling.put_scaling_policy(
            PolicyName=f"{self.endpoint}-scale-from-zero",
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "MetricAggregationType": "Average",
                "Cooldown": SCALE_OUT_COOLDOWN_S,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
            },
            **self.resource,
        )
        self.cloudwatch.put_metric_alarm(
            AlarmName=alarm_name(self.endpoint),
            Namespace=METRICS_NAMESPACE,
            MetricName=NO_CAPACITY_METRIC,
            Dimensions=endpoint_dimension(self.endpoint),
            Statistic="Average",
            Period=ALARM_PERIOD_S,
            EvaluationPeriods=ALARM_EVALUATION_PERIODS,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="missing",
            AlarmActions=[policy["PolicyARN"]],
        )

    def remove(self) -> list[str]:
        """Delete the variant's policies, the scale-from-zero alarm, then the target.

        AWS deletes a target's policies when it is deregistered, but not the alarm of a
        step policy; deleting the policies first keeps the order that works everywhere.
        """
        described = self.autoscaling.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[self.resource["ResourceId"]]
        )
        if not described["ScalableTargets"]:
            return []
        removed = []
        policies = self.autoscaling.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ResourceId=self.resource["ResourceId"]
        )["ScalingPolicies"]
        for policy in policies:
            self.autoscaling.delete_scaling_policy(PolicyName=policy["PolicyName"], **self.resource)
            removed.append(f"scaling policy {policy['PolicyName']}")
        alarm = alarm_name(self.endpoint)
        if self.cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]:
            self.cloudwatch.delete_alarms(AlarmNames=[alarm])
            removed.append(f"alarm {alarm}")
        self.autoscaling.deregister_scalable_target(**self.resource)
        removed.append(f"scalable target {self.resource['ResourceId']}")
        return removed


def autoscale(
    session: Any, endpoint: str, variant: str, scaling: ScalingSettings, queued: bool
) -> None:
    """Register the variant and its policies; `queued` for an asynchronous endpoint."""
    scaler = Scaler(session, endpoint, variant)
    scaler.register(scaling)
    if queued:
        scaler.put_target_tracking(
            f"{endpoint}-backlog", target_tracking(scaling.target_value, backlog_metric(endpoint))
        )
        if scaling.min_instances == 0:
            scaler.scale_from_zero()
    else:
        scaler.put_target_tracking(
            f"{endpoint}-invocations", target_tracking(scaling.target_value, invocations_metric())
        )


def describe(scaling: ScalingSettings, queued: bool) -> str:
    """One line for `deploy` to print."""
    if not queued:
        unit = "invocations per instance per minute"
    elif scaling.min_instances == 0:
        unit = f"queued requests per instance; the first instance starts on {NO_CAPACITY_METRIC}"
    else:
        unit = "queued requests per instance"
    return (
        f"autoscaling: {scaling.min_instances}-{scaling.max_instances} instances, "
        f"target {scaling.target_value:g} {unit}"
    )
