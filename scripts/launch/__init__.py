"""Launch code: run the containers' commands locally, and drive them on SageMaker.

- `local`: job folders laid out like /opt/ml, `train` and `serve` as processes, an HTTP
  client, local tuning (`scripts/local.py`);
- `cloud`: settings, data upload, training and tuning jobs, endpoints, reports
  (`scripts/cloud.py`);
- `demo`: `make demo`; `synthetic_images`: small generated data sets for the demo and tests.
"""
