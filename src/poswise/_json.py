"""Strict JSON for poswise's records (results, histories, model metadata).

Dependency-free, so that any module (``history`` included) can use it without an import
cycle; :mod:`poswise.registry` re-exports it.
"""
import math

__all__ = ["json_clean"]


def json_clean(obj):
    """``obj`` as strict JSON: non-finite floats -> None, numpy scalars and arrays ->
    Python, tuples -> lists, keys -> str."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
        if isinstance(obj, list):
            return json_clean(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
