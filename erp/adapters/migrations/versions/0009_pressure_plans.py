"""pressure plans (DSS-1): a day's hourly outlet set-points, run as background jobs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-15 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'pressure_plans',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('plan_date', sa.Date(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('summary', sa.JSON(none_as_null=True), nullable=True),
        sa.Column('result', sa.JSON(none_as_null=True), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pressure_plans')),
    )
    with op.batch_alter_table('pressure_plans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pressure_plans_created_at'), ['created_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pressure_plans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pressure_plans_created_at'))
    op.drop_table('pressure_plans')
