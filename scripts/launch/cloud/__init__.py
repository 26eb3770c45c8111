"""The launch CLI for SageMaker (`scripts/cloud.py`): the only code that talks to AWS.

`cli` is the command line, `commands` its commands (flags, plan and handler of each, one
module per group); `sdk2` makes every call into the SageMaker Python SDK 2.x. The rest is
plain data and boto3: `settings` resolves region, credentials, bucket, role and image
URIs; `data` uploads channels; `jobs` plans tuning and training jobs; `endpoints` deploys,
invokes and cleans up endpoints in every hosting mode (`hosting` describes the modes,
`limits` the platform's limits, `scaling` autoscaling, `async_inference` the S3 round trip
of an asynchronous endpoint, `predictor` an answer's shape); `transform` plans Batch
Transform jobs and gathers their results; `report` reads a job's Debugger output.
"""
