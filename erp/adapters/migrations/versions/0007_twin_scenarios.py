"""twin what-if scenarios, run as background jobs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10 10:12:41.218305
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'twin_scenarios',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('summary', sa.JSON(none_as_null=True), nullable=True),
        sa.Column('result', sa.JSON(none_as_null=True), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_twin_scenarios')),
    )
    with op.batch_alter_table('twin_scenarios', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_twin_scenarios_created_at'), ['created_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('twin_scenarios', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_twin_scenarios_created_at'))
    op.drop_table('twin_scenarios')
