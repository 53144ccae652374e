"""What the package ships for testing agents against it: a fake provider on loopback
(``fakeprovider``) with real rate limits, rate-limit headers, 429s and streaming."""
