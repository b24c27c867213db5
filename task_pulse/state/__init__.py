"""Where the daemon keeps what it announced and what is still to be told: its state backends.

* outbox.py: the local SQLite state database in `<tasks>/.pulse/` (the worker's side), its SQL in
  sql_sqlite.py; deliveries.py: the deliverers' side of it (claims, cards, gateway handoffs).
* shared.py: a PostgreSQL outbox several hosts' daemons share, its SQL in sql_postgres.py; psycopg
  (the `postgres` extra) is imported only there.
"""
