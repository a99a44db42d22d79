"""connections: per tenant and role, the vendor account textback is authorized for (OAuth tokens encrypted)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import core.store.tables


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('provider', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('token_blob', sa.Text(), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('expires_at', core.store.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('account_label', sa.String(length=255), nullable=True),
    sa.Column('created_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'role', name='uq_connections_tenant_role')
    )


def downgrade() -> None:
    op.drop_table('connections')
