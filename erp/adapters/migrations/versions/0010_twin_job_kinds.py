"""twin jobs of more than one kind: what-if scenarios and leak localizations

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('twin_scenarios', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=32), nullable=False,
                                      server_default='what_if'))
        batch_op.create_index(batch_op.f('ix_twin_scenarios_kind'), ['kind'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('twin_scenarios', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_twin_scenarios_kind'))
        batch_op.drop_column('kind')
