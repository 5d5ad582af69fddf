"""Sparse direct solves under jit, vmap and grad: KLU through klujax's primitives.

klujax's convenience wrappers sort the COO indices on every call (a lexsort that costs more
than the factorization on 10,000 unknowns, and that XLA tries to constant-fold for seconds at
compile time). The compiled network's patterns are sorted once (row-major, as KLU expects), so
these wrappers bind the primitives directly with the symbolic analysis computed at compile time.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import klujax

__all__ = ["solve_numeric", "solve_pattern"]


def _symbolic_handle(symbolic: Any) -> jnp.ndarray:
    return jnp.asarray(symbolic.raw, dtype=jnp.uint64)


def solve_pattern(rows: Any, cols: Any, values: jnp.ndarray, rhs: jnp.ndarray, symbolic: Any) -> jnp.ndarray:
    """x with A·x = rhs; A given by sorted (rows, cols) [nnz], `values` [nnz], rhs [n].

    Factorizes numerically with the pattern's precomputed symbolic analysis.
    """
    x = klujax.solve_with_symbol_f64.bind(
        jnp.asarray(rows, dtype=jnp.int32), jnp.asarray(cols, dtype=jnp.int32),
        values[None, :], rhs[None, :, None], _symbolic_handle(symbolic))
    return x.reshape(rhs.shape)


def solve_numeric(numeric: Any, symbolic: Any, rhs: jnp.ndarray) -> jnp.ndarray:
    """x with A·x = rhs for a matrix factorized once (`numeric`, from `klujax.factor`)."""
    handle = jnp.asarray(numeric.as_list(), dtype=jnp.uint64)
    x = klujax.solve_with_numeric_f64.bind(_symbolic_handle(symbolic), handle, rhs[None, :, None])
    return x.reshape(rhs.shape)
