"""Route values: the :data:`Route` type and the parser with which every split BatchNorm reads its route.

A leaf module (it imports no other part of the package), so that the layer can read routes while
:mod:`.routing`, which sets them on a model's layers, imports the layer.
"""

from __future__ import annotations

Route = str | int | tuple[str, float] | None
"""``"split"``, ``"main"``, ``"aux"``, a split index, ``("blend", α)``, ``("blend_affine", α)``, or None
(the default: ``"split"`` in training mode, ``"main"`` in eval mode)."""

_BLEND_KINDS = ("blend", "blend_affine")


def _parse_route(value: Route, num_splits: int, training: bool) -> tuple[str, int, float]:
    """Normalize a route to (kind, split, α): ("split", -1, 0), ("branch", k, 0) or (blend kind, 1, α).

    Raises ValueError naming the allowed routes when ``value`` is not one.
    """
    if value is None:
        return ("split", -1, 0.0) if training else ("branch", 0, 0.0)
    if isinstance(value, str):
        if value == "split":
            return "split", -1, 0.0
        if value in ("main", "aux"):
            return "branch", 0 if value == "main" else 1, 0.0
    elif isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < num_splits:
            return "branch", value, 0.0
        raise ValueError(f"split BatchNorm route {value}: the layers have splits 0..{num_splits - 1}")
    elif isinstance(value, (tuple, list)) and len(value) == 2 and value[0] in _BLEND_KINDS:
        alpha = value[1]
        if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0.0 <= alpha <= 1.0:
            return str(value[0]), 1, float(alpha)
        raise ValueError(f"split BatchNorm route {tuple(value)!r}: α must be a number in [0, 1]")
    raise ValueError(f"split BatchNorm route {value!r} is not valid; use 'split', 'main', 'aux', a split "
                     f"index, ('blend', α) or ('blend_affine', α)")
