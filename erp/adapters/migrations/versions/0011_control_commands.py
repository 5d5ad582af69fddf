"""control command history: one row per command, as it stands after its latest step

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-16 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'control_commands',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('target_kind', sa.String(length=16), nullable=False),
        sa.Column('asset_id', sa.String(length=64), nullable=False),
        sa.Column('area_id', sa.String(length=64), nullable=True),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('value', sa.Float(), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('requested_by', sa.String(length=100), nullable=False),
        sa.Column('requested_role', sa.String(length=32), nullable=True),
        sa.Column('approved_by', sa.String(length=100), nullable=True),
        sa.Column('approval_reason', sa.Text(), nullable=False),
        sa.Column('state', sa.String(length=24), nullable=False),
        sa.Column('last_step', sa.String(length=24), nullable=False),
        sa.Column('outcome', sa.Text(), nullable=False),
        sa.Column('needs_approval', sa.Boolean(), nullable=False),
        sa.Column('needs_override', sa.Boolean(), nullable=False),
        sa.Column('checks', sa.JSON(), nullable=False),
        sa.Column('impact', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_control_commands')),
    )
    with op.batch_alter_table('control_commands', schema=None) as batch_op:
        batch_op.create_index('ix_control_commands_area_id_created_at', ['area_id', 'created_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_control_commands_created_at'), ['created_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_control_commands_state'), ['state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('control_commands', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_control_commands_state'))
        batch_op.drop_index(batch_op.f('ix_control_commands_created_at'))
        batch_op.drop_index('ix_control_commands_area_id_created_at')
    op.drop_table('control_commands')
