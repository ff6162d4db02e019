"""Type stubs of the Rust extension behind :mod:`pinnersage` (use the package's functions)."""

from typing import Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "PinnersageError",
    "NotFoundError",
    "ConflictError",
    "UnavailableError",
    "InternalError",
    "cluster",
    "profiles",
    "variant_alphas",
    "evaluate",
    "DEFAULT_ALPHA",
    "DEFAULT_LAMBDA",
    "DEFAULT_MAX_ACTIONS",
    "PROFILE_COLUMNS",
    "PROFILE_SCHEMA_DDL",
    "PROFILE_SPARK_SCHEMA",
    "PROFILE_VARIANTS_SCHEMA_DDL",
    "PROFILE_VARIANTS_SPARK_SCHEMA",
    "DEFAULT_WINDOW_DAYS",
]

DEFAULT_ALPHA: float
DEFAULT_LAMBDA: float
DEFAULT_MAX_ACTIONS: int
DEFAULT_WINDOW_DAYS: int
PROFILE_COLUMNS: List[str]
PROFILE_SCHEMA_DDL: str
PROFILE_SPARK_SCHEMA: bytes
PROFILE_VARIANTS_SCHEMA_DDL: str
PROFILE_VARIANTS_SPARK_SCHEMA: bytes

class PinnersageError(ValueError):
    """Every pinnersage error; as itself, bad input or parameters (the message names the
    argument, row or column). Its subclasses are the other kinds."""

class NotFoundError(PinnersageError):
    """Something named does not exist."""

class ConflictError(PinnersageError):
    """Valid input that conflicts with the current state."""

class UnavailableError(PinnersageError):
    """A service is down or overloaded: retry later."""

class InternalError(PinnersageError):
    """A failure of the machine, or a bug: please report it."""

_StrBuffers = Tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]

def cluster(
    embeddings: npt.NDArray[np.float32],
    times: npt.NDArray[np.int64],
    now: int,
    alpha: float,
    lam: float,
    max_actions: int,
    weights: Optional[npt.NDArray[np.float32]] = None,
) -> List[Tuple[int, npt.NDArray[np.int64], float, int]]: ...
def profiles(
    users: _StrBuffers,
    items: _StrBuffers,
    times: npt.NDArray[np.int64],
    weights: Optional[npt.NDArray[np.float32]],
    actions: Optional[_StrBuffers],
    item_ids: Optional[_StrBuffers],
    embeddings: npt.NDArray[np.float32],
    now: int,
    window_days: int,
    alpha: float,
    lam: float,
    max_actions: int,
    threads: int,
    variant_alphas: Optional[List[float]] = None,
) -> Tuple[bytes, Dict[str, object]]: ...
def variant_alphas(
    alpha: float, lam: float, max_actions: int, variants: List[float]
) -> List[float]: ...
def evaluate(
    item_ids: _StrBuffers,
    embeddings: npt.NDArray[np.float32],
    users: _StrBuffers,
    items: _StrBuffers,
    times: npt.NDArray[np.int64],
    options: Dict[str, object],
) -> Tuple[str, str, List[Tuple[str, str]]]: ...
