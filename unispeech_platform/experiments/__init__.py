"""Multi-stage experiments (quickstart demo, the paper's cross-lingual comparison): corpus -> per arm
pretraining -> CTC fine-tuning on low-resource targets -> per-language PER, as one parent MLflow run."""
