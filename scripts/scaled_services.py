"""
Are PostgreSQL and Redis reachable for the scaled test leg?

Exit 0 when both answer, 1 otherwise (with the reason on stderr). Uses only
the standard library plus the project's own psycopg and redis clients.
"""

import os
import sys

DATABASE_URL = os.environ.get(
    "SCALED_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/champ_portal"
)
BROKER_URL = os.environ.get("SCALED_BROKER_URL", "redis://127.0.0.1:6379/15")


def main() -> int:
    try:
        import psycopg

        dsn = DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        print(f"PostgreSQL is not reachable at {DATABASE_URL}: {exc}", file=sys.stderr)
        return 1
    try:
        import redis

        redis.from_url(BROKER_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        print(f"Redis is not reachable at {BROKER_URL}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
