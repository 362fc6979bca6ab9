"""The customer portal: customers sign in with a local account, approve
or narrow a third party's consent request (OAuth 2.0 authorization code with PKCE), and reach
their own data, consents and access history (X.1332 C2.2)."""
