"""``python -m broker`` runs the same CLI as the ``broker`` console script."""

from broker.cli.main import run

run()
