"""Root subscription: live registry changes (more live feeds arrive with telemetry)."""

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
            async for change in sub:
                if kinds is not None and change.kind not in kinds:
                    continue
                if scope is not None and change.area_id not in scope:
                    continue
                yield change
