"""Retention of the broker's own data: a schedule per data kind and the job that purges what
is due (``broker retention run``; ``broker serve`` runs it every ``retention_interval_s``)."""
