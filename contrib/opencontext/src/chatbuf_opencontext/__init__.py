"""Feeds chatbuf's flushed chat batches to OpenContext's processor.

A durable JetStream pull consumer on CHAT_FLUSHED validates each batch into
RawContextProperties and hands it to a callback; see BatchConsumer.
"""

from .consumer import BatchConsumer, ConsumerConfig, MalformedBatch, parse_batch, parse_time
from .model import RawContextProperties, default_model

__all__ = [
    "BatchConsumer",
    "ConsumerConfig",
    "MalformedBatch",
    "RawContextProperties",
    "default_model",
    "parse_batch",
    "parse_time",
]
