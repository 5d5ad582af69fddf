"""notification messages and their status history

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 17:03:32.974765
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'notification_messages',
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('alarm_id', sa.String(length=200), nullable=False),
        sa.Column('level', sa.Integer(), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('recipient', sa.String(length=200), nullable=False),
        sa.Column('message', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_notification_messages')),
    )
    with op.batch_alter_table('notification_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_messages_alarm_id'), ['alarm_id'],
                              unique=False)

    op.create_table(
        'notification_status_changes',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('key', sa.String(length=300), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ['key'], ['notification_messages.key'],
            name=op.f('fk_notification_status_changes_key_notification_messages')),
        sa.PrimaryKeyConstraint('seq', name=op.f('pk_notification_status_changes')),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table('notification_status_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_status_changes_key'), ['key'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notification_status_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_status_changes_key'))
    op.drop_table('notification_status_changes')
    with op.batch_alter_table('notification_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_messages_alarm_id'))
    op.drop_table('notification_messages')
