"""The model artifact: the contract between the training job and the serving container.

- `config`: `model_config.json` as one typed, versioned document (no torch needed);
- `preprocessing`: decoding and the eval transform, shared by training and serving;
- `torchscript`: writing and loading `model.pt`;
- `platform`: the SageMaker base folder both containers' contracts start from.
"""
