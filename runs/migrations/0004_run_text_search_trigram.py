"""
PostgreSQL only: trigram indexes for the history's free-text search.

The history searches ``UPPER(input::text) LIKE UPPER('%term%')`` (Django's
``icontains`` over the JSON cast to text); a GIN trigram index on exactly that
expression turns the scan into an index lookup. Needs the ``pg_trgm``
extension (trusted since PostgreSQL 13: a database owner may create it); if it
cannot be created the search still works, by a scan. On a large existing
table, create these by hand with ``CREATE INDEX CONCURRENTLY`` first.

SQLite has no equivalent here: the search scans, newest first, and stops at a
page of matches (see the README's benchmark section for what that costs).
"""

import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger(__name__)

INDEXES = {
    "run_input_trgm_idx": 'UPPER(("input")::text) gin_trgm_ops',
    "run_output_trgm_idx": 'UPPER(("output")::text) gin_trgm_ops',
}


def create_trigram_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        logger.warning("pg_trgm unavailable (%s): the history's text search will scan.", exc)
        return
    with connection.cursor() as cursor:
        for name, expression in INDEXES.items():
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON runs_run USING gin ({expression})"
            )


def drop_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for name in INDEXES:
            cursor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("runs", "0003_run_champ_run_id_index")]

    operations = [migrations.RunPython(create_trigram_indexes, drop_trigram_indexes)]
