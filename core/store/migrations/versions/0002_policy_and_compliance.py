"""policy and compliance

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa
import core.store.tables


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('opt_out_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=10), nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('created_at', core.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('opt_out_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_opt_out_events_lead_id'), ['lead_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_opt_out_events_tenant_id'), ['tenant_id'], unique=False)

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=20), nullable=False, server_default='twilio'))
        batch_op.add_column(sa.Column('answered_by', sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column('duration_seconds', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('recording_url', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('transcription', sa.Text(), nullable=True))

    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('followups_sent', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('paused', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('handoff_summary', sa.Text(), nullable=True))

    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('do_not_text', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('line_type', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('undeliverable_code', sa.Integer(), nullable=True))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=30), nullable=True))

    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_before', core.store.tables.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_outbox_not_before'), ['not_before'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_not_before'))
        batch_op.drop_column('not_before')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('purpose')

    with op.batch_alter_table('leads', schema=None) as batch_op:
        batch_op.drop_column('undeliverable_code')
        batch_op.drop_column('line_type')
        batch_op.drop_column('do_not_text')

    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_column('handoff_summary')
        batch_op.drop_column('paused')
        batch_op.drop_column('followups_sent')

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('transcription')
        batch_op.drop_column('recording_url')
        batch_op.drop_column('duration_seconds')
        batch_op.drop_column('answered_by')
        batch_op.drop_column('source')

    with op.batch_alter_table('opt_out_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_opt_out_events_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_opt_out_events_lead_id'))

    op.drop_table('opt_out_events')
