"""Accounting: the only writer to ClickHouse, and the SQL endpoint in front of it.

Modules (each small, imported directly; nothing is re-exported here so that
importing one part does not load the others):

* ``service``: wiring; ``serve(settings, stop)`` runs the service
  (``python -m services.accounting``).
* ``puller``: fetches usage events from the durable pull consumer.
* ``consumer``: that consumer's configuration, applied on purpose.
* ``writer``: batching by size and age; ack after insert, nak on failure,
  terminate malformed messages.
* ``rows``: one ``UsageEvent`` as one row of ``requests``.
* ``store``: the ``UsageStore`` interface and ``ClickHouseStore`` (chDB or server).
* ``migrate`` and ``migrations/``: numbered schema migrations with rollback.
* ``responder``: answers one ``SqlQuery`` with one ``SqlResult``.
* ``sql_guard`` and ``sqltext``: the read-only check in front of the engine.
* ``sql_client``: ``run_sql`` and ``render`` for the CLI.
"""
