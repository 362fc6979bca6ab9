"""The HTTPS API (FastAPI) served over TLS 1.3 with client certificates."""
