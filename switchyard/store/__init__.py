"""Durable state: SQLAlchemy 2 Core tables, Alembic migrations, SQLite or PostgreSQL."""
