"""two-way sync: push subscriptions, pull cursors, the CRM owner on the lead

Revision ID: 0004_sync
Revises: 0004_admin
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
import core.store.tables


revision = '0004_sync'
down_revision = '0004_admin'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sync_subscriptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('resource', sa.String(length=255), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('resource_id', sa.String(length=255), nullable=True),
    sa.Column('secret_sha256', sa.String(length=64), nullable=True),
    sa.Column('signing_secret', sa.Text(), nullable=True),
    sa.Column('path_token', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('expires_at', core.store.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('provider', 'external_id', name='uq_sync_subscriptions_external'),
    sa.UniqueConstraint('path_token')
    )
    with op.batch_alter_table('sync_subscriptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_subscriptions_tenant_id'), ['tenant_id'], unique=False)
    op.create_table('sync_cursors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('scope', sa.String(length=255), nullable=False),
    sa.Column('cursor', sa.Text(), nullable=True),
    sa.Column('updated_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'provider', 'scope', name='uq_sync_cursors_feed')
    )
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('crm_owner_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_column('crm_owner_id')
    op.drop_table('sync_cursors')
    with op.batch_alter_table('sync_subscriptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_subscriptions_tenant_id'))
    op.drop_table('sync_subscriptions')
