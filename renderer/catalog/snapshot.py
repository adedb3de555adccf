"""The snapshot file format: what ``renderer snapshot`` prints and ``--catalog`` reads.

    {"version": 1,
     "nodes":     [{"name", "address", "meta"}],
     "instances": [{"id", "name", "address", "port", "tags", "meta", "node", "status"}],
     "kv":        {"path": "value"}}

Only ``instances`` is required; see ``catalog.from_snapshot`` for defaults.
A key missing from ``kv`` is absent, as it would be in Consul.
"""

from __future__ import annotations

import json
from pathlib import Path

from renderer.errors import CatalogFileError
from . import model as catalog_module
from .kv import KvSnapshot
from .model import Catalog


def load(path: Path) -> tuple[Catalog, KvSnapshot]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise CatalogFileError(f"cannot read catalog file {path}: {error.strerror}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise CatalogFileError(f"catalog file {path} is not valid JSON: {error}") from None
    try:
        catalog = catalog_module.from_snapshot(data)
        kv = data.get("kv") or {}
        if not isinstance(kv, dict) or not all(isinstance(v, str) for v in kv.values()):
            raise ValueError("'kv' must map keys to string values")
    except (ValueError, TypeError, AttributeError) as error:
        raise CatalogFileError(f"catalog file {path}: {error}") from None
    return catalog, KvSnapshot([""], kv)


def dump(catalog: Catalog, kv: KvSnapshot | None = None) -> str:
    data = catalog.as_json()
    data["kv"] = dict(sorted(kv.values.items())) if kv else {}
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
