"""A local fake LLM provider (OpenAI and Anthropic wire formats) with exact rate limits.

Used by the demo, the tests, the benchmarks and the SDK integration tests; it never leaves
the loopback interface. See :class:`FakeProvider`.
"""

from cross_instance.testing.fakeprovider.headers import (
    BucketView,
    format_openai_duration,
    format_rfc3339,
    parse_openai_duration,
    ratelimit_headers,
    retry_headers,
)
from cross_instance.testing.fakeprovider.limits import Decision, LimitConfig, Limits
from cross_instance.testing.fakeprovider.server import FakeProvider

__all__ = [
    "BucketView",
    "Decision",
    "FakeProvider",
    "LimitConfig",
    "Limits",
    "format_openai_duration",
    "format_rfc3339",
    "parse_openai_duration",
    "ratelimit_headers",
    "retry_headers",
]
