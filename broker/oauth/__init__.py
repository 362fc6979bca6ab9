"""OAuth 2.0 for recipients: client credentials over mutual TLS, certificate-bound tokens."""
