"""Models out of the platform (``python -m jobs.export``): a model directory, training checkpoint, run directory or
MLflow URI (evaluate/model_source.resolve_model) written as a transformers-format directory (``hf``) or as an
ONNX graph checked against PyTorch with onnxruntime (``onnx``), into an output directory of the job's own
(runtime/output_paths.py). docs/export.md."""
