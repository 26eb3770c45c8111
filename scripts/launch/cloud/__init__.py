"""The launch CLI for SageMaker (`scripts/cloud.py`): the only code that talks to AWS.

`settings` resolves region, credentials, bucket, role and image URIs; `data` uploads
channels; `jobs` runs tuning and training jobs; `endpoints` deploys, invokes and cleans
up; `report` reads a job's Debugger output; `cli` is the command line.
"""
