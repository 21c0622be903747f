"""Cross-lingual evaluation: per-language PER of CTC models and language-ID accuracy, with Ray Data inference,
jiwer scores, tables, plots and MLflow logging."""
