"""A cost limit for list fields: the product of page sizes down each branch must stay bounded.

Depth, token and alias limits come from Strawberry; none of them stops `pipes(first: 500) {
fromNode { ... } }` nested under another large list, which this rule does. Cost of a field =
1 + (its `first`, or the default page size, for list fields) × cost of its selections.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
)

__all__ = ["cost_limit_rule"]

DEFAULT_PAGE = 50
# Fields returning unpaginated lists of bounded size count as this many items.
LIST_FIELDS = {"edges": 1, "areas": 50, "users": 200, "crews": 100, "members": 20,
               "crewPositions": 100, "pressureLevels": 5,
               "components": 50, "disconnectedParts": 50, "protectedPipes": 50}


def cost_limit_rule(max_cost: int) -> type[ValidationRule]:
    """A graphql-core validation rule refusing operations whose cost exceeds `max_cost`."""

    class CostLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._fragments = {f.name.value: f for f in context.document.definitions
                               if f.kind == "fragment_definition"}
            self._variables: dict[str, Any] = {}

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            cost = self._cost(node.selection_set, depth=0)
            if cost > max_cost:
                name = node.name.value if node.name else "anonymous"
                self.report_error(GraphQLError(
                    f"operation {name!r} costs {cost} > limit {max_cost}: ask for smaller pages",
                    node))

        def _first(self, field: FieldNode) -> int | None:
            for arg in field.arguments or ():
                if arg.name.value in ("first", "last"):
                    if isinstance(arg.value, IntValueNode):
                        return int(arg.value.value)
                    if isinstance(arg.value, VariableNode):
                        return 500  # unknown at validation time: assume the maximum page
            return None

        def _cost(self, sel: SelectionSetNode | None, depth: int) -> int:
            if sel is None or depth > 50:
                return 0
            total = 0
            for s in sel.selections:
                if isinstance(s, FieldNode):
                    first = self._first(s)
                    mult = first if first is not None else LIST_FIELDS.get(s.name.value, 1)
                    total += 1 + mult * self._cost(s.selection_set, depth + 1)
                elif isinstance(s, InlineFragmentNode):
                    total += self._cost(s.selection_set, depth + 1)
                elif isinstance(s, FragmentSpreadNode):
                    frag = self._fragments.get(s.name.value)
                    if frag is not None:
                        total += self._cost(frag.selection_set, depth + 1)  # type: ignore[attr-defined]
            return total

    return CostLimit
