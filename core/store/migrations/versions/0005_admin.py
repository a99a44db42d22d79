"""admin: messages.template (the report's reply rate per first template), admin users and their sessions

Revision ID: 0004_admin
Revises: 0004_perf
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa
import core.store.tables


revision = '0004_admin'
down_revision = '0004_perf'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template', sa.String(length=40), nullable=True))
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index('ix_calls_tenant_created', ['tenant_id', 'created_at'], unique=False)
    op.create_table('admin_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=255), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=True),
    sa.Column('agency', sa.Boolean(), nullable=False),
    sa.Column('created_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('admin_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('expires_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['admin_users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_sha256')
    )
    with op.batch_alter_table('admin_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admin_sessions_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_table('admin_sessions')
    op.drop_table('admin_users')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_tenant_created')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('template')
