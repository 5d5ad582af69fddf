"""crew positions: the current and the previous UTC day of every crew's track

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-14 09:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'crew_positions',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('crew_id', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
        sa.Column('lat', sa.Float(), nullable=False),
        sa.Column('lon', sa.Float(), nullable=False),
        sa.Column('accuracy_m', sa.Float(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['crew_id'], ['crews.id'], ondelete='CASCADE',
                                name=op.f('fk_crew_positions_crew_id_crews')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE',
                                name=op.f('fk_crew_positions_user_id_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_crew_positions')),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table('crew_positions', schema=None) as batch_op:
        batch_op.create_index('ix_crew_positions_crew_id_ts', ['crew_id', 'ts'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('crew_positions', schema=None) as batch_op:
        batch_op.drop_index('ix_crew_positions_crew_id_ts')
    op.drop_table('crew_positions')
