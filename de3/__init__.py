"""de3: early-exit inference for transformer encoders (DE³-BERT and baselines)."""

from de3.errors import De3Error
from de3.utils.config import register_resolvers

register_resolvers()

__all__ = ["De3Error"]
