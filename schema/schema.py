"""The assembled GraphQL schema, its protective limits, and the SDL export."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.exceptions import StrawberryGraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from schema.alarms import AlarmQuery, AlarmSubscription
from schema.balance import BalanceQuery
from schema.cache import ResponseCache, response_cache_extension
from schema.control import CommandQuery, CommandSubscription
from schema.crews import CrewMutation, CrewQuery, CrewSubscription
from schema.errors import ForbiddenError
from schema.forecast import ForecastQuery
from schema.leaks import LeakQuery
from schema.limits import cost_limit_rule
from schema.map import MapQuery
from schema.mutation import Mutation
from schema.pressure_plan import PressurePlanMutation, PressurePlanQuery
from schema.query import Query
from schema.subscription import Subscription
from schema.twin import TwinQuery, TwinSubscription
from schema.types.tags import STATUS_CODE_SCALAR, StatusCode

__all__ = ["Limits", "build_schema", "export_sdl", "sdl"]

SDL_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"


@dataclass(frozen=True, slots=True)
class Limits:
    """Protective limits of the GraphQL surface."""

    max_depth: int = 10
    max_tokens: int = 2000
    max_aliases: int = 15
    max_cost: int = 20_000
    introspection: bool = True


def _should_mask(error: GraphQLError) -> bool:
    """Mask unexpected exceptions; keep refusals and input errors readable."""
    original = error.original_error
    # Errors we raise on purpose (refusals, bad arguments) stay readable.
    return not (original is None
                or isinstance(original, ForbiddenError | StrawberryGraphQLError | ValueError))


log = logging.getLogger("gasops.graphql")


class GasopsSchema(strawberry.Schema):
    """Strawberry's schema, logging caller mistakes briefly and only real faults with traces."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        for error in errors:
            if _should_mask(error):
                super().process_errors([error], execution_context)
            else:
                log.info("graphql request refused: %s", error.message)


def build_schema(limits: Limits | None = None,
                 response_cache: ResponseCache | None = None) -> strawberry.Schema:
    """The schema with depth, token, alias and cost limits and error masking on."""
    limits = limits or Limits()
    # The rule classes are made once: Strawberry's limiter extensions make a new class per
    # instance, which would defeat ValidationCache (its key includes the rule classes) and
    # re-validate every request.
    rules = [
        *QueryDepthLimiter(max_depth=limits.max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules,
        cost_limit_rule(limits.max_cost),
    ]
    if not limits.introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    query = merge_types("Query", (Query, AlarmQuery, CommandQuery, TwinQuery, MapQuery,
                                  CrewQuery, PressurePlanQuery, BalanceQuery, ForecastQuery,
                                  LeakQuery))
    return GasopsSchema(
        query=query, mutation=merge_types("Mutation", (Mutation, CrewMutation,
                                                       PressurePlanMutation)),
        subscription=merge_types("Subscription", (Subscription, AlarmSubscription,
                                                  CommandSubscription, TwinSubscription,
                                                  CrewSubscription)),
        config=StrawberryConfig(scalar_map={StatusCode: STATUS_CODE_SCALAR}),
        extensions=[
            # Factories, so each request gets fresh extension instances.
            partial(MaxTokensLimiter, max_token_count=limits.max_tokens),
            partial(AddValidationRules, rules),
            partial(MaskErrors, should_mask_error=_should_mask),
            partial(ParserCache, maxsize=256),
            partial(ValidationCache, maxsize=256),
            *([response_cache_extension(response_cache)] if response_cache is not None else []),
        ],
    )


def sdl() -> str:
    """The schema in SDL, as committed in `schema.graphql`."""
    return build_schema().as_str() + "\n"


def export_sdl(path: Path = SDL_PATH) -> Path:
    """Write the SDL file; a test keeps it in sync with the code."""
    path.write_text(sdl())
    return path
