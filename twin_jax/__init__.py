"""The hydraulic twin, pure JAX on CPU in float64: compile a network once, solve it many times.

`compile_network(description)` → `CompiledNetwork`; `solve_steady(net, params)` → `Result`.
Nothing here imports another gasops package: the server builds descriptions from the registry
and feeds live values in (server/twin_runner.py).
"""

import jax

jax.config.update("jax_enable_x64", True)

from twin_jax.network import (  # noqa: E402 - x64 must be on before any array is made
    CompiledNetwork,
    Consumer,
    NetworkDescription,
    NetworkError,
    Node,
    Parameters,
    Physics,
    Pipe,
    Regulator,
    Source,
    Valve,
    compile_network,
)
from twin_jax.physics.friction import FrictionLaw  # noqa: E402
from twin_jax.physics.gas import GasProperties  # noqa: E402
from twin_jax.solve import Result, SolverOptions, State, Status, solve_steady, supplied_nodes  # noqa: E402

__all__ = [
    "CompiledNetwork", "Consumer", "FrictionLaw", "GasProperties", "NetworkDescription",
    "NetworkError", "Node", "Parameters", "Physics", "Pipe", "Regulator", "Result", "Source",
    "SolverOptions", "State", "Status", "Valve", "compile_network", "solve_steady",
    "supplied_nodes",
]
