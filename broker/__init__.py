"""The smart-meter data broker (ITU-T X.1332): service, CLI, audit log, keys, CA and storage.

Importing this package does nothing: engines, keys and servers are built by the CLI commands and
by ``broker.api.app.create_app`` (no work at import time).
"""

__version__ = "0.1.0"
