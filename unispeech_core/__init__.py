"""unispeech_core: UniSpeech in pure PyTorch, weight-compatible with transformers' UniSpeech classes.

No Ray, DeepSpeed or MLflow here: the platform wraps this library from outside.
"""

from .checkpoint import WeightsMismatchError
from .config import UniSpeechConfig
from .decoding import ctc_greedy_decode, ctc_greedy_ids
from .features import pad_batch, pad_labels
from .metrics import error_rates, phone_error_rate
from .models import (
    UniSpeechForCTC,
    UniSpeechForPreTraining,
    UniSpeechForSequenceClassification,
    UniSpeechModel,
)
from .quantizer import gumbel_temperature
from .tokenizer import PhoneTokenizer

__all__ = [
    "PhoneTokenizer",
    "UniSpeechConfig",
    "UniSpeechForCTC",
    "UniSpeechForPreTraining",
    "UniSpeechForSequenceClassification",
    "UniSpeechModel",
    "WeightsMismatchError",
    "ctc_greedy_decode",
    "ctc_greedy_ids",
    "error_rates",
    "gumbel_temperature",
    "pad_batch",
    "pad_labels",
    "phone_error_rate",
]
