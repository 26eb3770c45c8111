"""The launch CLI for SageMaker (`scripts/cloud.py`): the only code that talks to AWS.

`settings` resolves region, credentials, bucket, role and image URIs; `data` uploads
channels; `jobs` runs tuning and training jobs; `endpoints` deploys, invokes and cleans
up endpoints in every hosting mode (`hosting` describes the modes, `limits` the
platform's limits, `scaling` autoscaling, `async_inference` the S3 round trip of an
asynchronous endpoint, `predictor` the SDK Predictor); `transform` runs Batch Transform
jobs and gathers their results; `report` reads a job's Debugger output; `cli` is the
command line.
"""
