"""Atomic file writes shared by every layer (workdirs, evaluation results, reports)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def write_json_atomically(path: str, payload: dict[str, Any]) -> None:
    """Writes to a unique temporary file beside ``path``, syncs it, then renames it over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    with os.fdopen(handle, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
