"""hot-path indexes: a lead's calls (cooldown and answered-since checks), due pending outbox rows (relay)

bench/growth.py showed both as whole-table scans once 10k calls / 20k outbox rows are stored.

Revision ID: 0004_perf
Revises: 0003
Create Date: 2026-12-03
"""
from alembic import op


revision = '0004_perf'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_calls_lead_id', 'calls', ['lead_id'])
    op.create_index('ix_outbox_status_not_before', 'outbox', ['status', 'not_before'])


def downgrade() -> None:
    op.drop_index('ix_outbox_status_not_before', table_name='outbox')
    op.drop_index('ix_calls_lead_id', table_name='calls')
