"""messages.template: which template a first text was rendered from (the report's reply rate per template)

Revision ID: 0004_admin
Revises: 0003
Create Date: 2026-12-03
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_admin'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template', sa.String(length=40), nullable=True))
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index('ix_calls_tenant_created', ['tenant_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_tenant_created')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('template')
