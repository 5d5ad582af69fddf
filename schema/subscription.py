"""Root subscription: live registry changes (more live feeds arrive with telemetry)."""

import datetime as dt
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from strawberry.types import Info

from schema.context import Context
from schema.mutation import REGISTRY_TOPIC, AssetChange
from schema.permissions import Can

__all__ = ["Subscription"]


@strawberry.type
class Subscription:
    @strawberry.subscription(permission_classes=[Can("registry.subscribe")],
                             description="Every create/update/retire of registry assets.")
    async def asset_changes(self, info: Info[Context, Any],
                            kinds: list[str] | None = None) -> AsyncGenerator[AssetChange, None]:
        scope = info.context.areas()
        async with info.context.services.bus.subscribe(REGISTRY_TOPIC) as sub:
            async for msg in sub:
                if msg.get("type") == "resync":
                    continue  # a registry change feed has no state to re-read
                if kinds is not None and msg["kind"] not in kinds:
                    continue
                if scope is not None and msg["area_id"] not in scope:
                    continue
                yield AssetChange(operation=msg["operation"], kind=msg["kind"], id=msg["id"],
                                  actor=msg["actor"], ts=dt.datetime.fromisoformat(msg["ts"]),
                                  area_id=msg["area_id"])
