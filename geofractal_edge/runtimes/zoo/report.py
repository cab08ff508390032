"""What the zoo says about itself: one model, the whole zoo, and its keys (the /status and /keys bodies).

Read-only: every figure comes from `ZooState` (under its lock), the trust table, the key ring and
the memory meter. A model that failed registration or a key file that cannot be used is listed
with its reason rather than left out, so `gfedge ps` shows why something is not served.
"""

from __future__ import annotations

from geofractal_edge.runtimes.zoo.errors import UnknownModelError
from geofractal_edge.backends.process import allocator_stats


def describe(state, trust, keyring, model: str) -> dict:
    info = state.describe(model)
    entry = state.get(model)
    info["trust"] = trust.summary(model)
    info["keys"] = entry.bundle.key_names() if entry.bundle is not None else []
    if entry.bundle is not None and entry.takes_key:
        info["keys"] += sorted({k.name for k in keyring.keys() if k.core_sha256 == entry.core and k.dim == entry.key_dim} - set(info["keys"]))
    return info


def status(zoo) -> dict:
    ids = [e.id for e in zoo.state.entries()]
    accounted = zoo.state.accounted_bytes()
    reading = zoo.meter.read()
    baseline = zoo.residency.baseline.counted()
    return {
        "folder": str(zoo.folder),
        "policy": zoo.policy.name,
        "low_power": zoo.low_power,
        "target": zoo.profile.name,
        "memory_shared": zoo.profile.memory_shared,
        "budget_bytes": zoo.budget_bytes,
        "accounted_bytes": accounted,
        "measured_bytes": reading.counted() - baseline,
        "rss_bytes": reading.rss,
        "device_bytes": reading.device,
        "baseline_bytes": baseline,
        "allocator": allocator_stats(),
        "models": [m for m in (_describe_if_present(zoo, i) for i in ids) if m is not None],
        "metrics": zoo.metrics.summary(),
    }


def _describe_if_present(zoo, model: str) -> dict | None:
    try:
        return zoo.describe(model)
    except UnknownModelError:  # removed by a scan since the list was taken
        return None


def keys_status(state, keyring) -> dict:
    entries = [e for e in state.entries() if e.bundle is not None and e.takes_key]
    folder_keys, rejected = [], [{"path": p, "reason": r} for p, r in keyring.unreadable_items()]
    for key in keyring.keys():
        models = [e.id for e in entries if e.core == key.core_sha256 and e.key_dim == key.dim]
        if models:
            folder_keys.append({"name": key.name, "path": str(key.path), "models": models})
        else:
            rejected.append({"path": str(key.path), "reason": f"made for core {key.core_sha256[:12]} (dim {key.dim}); no model in this zoo has that core"})
    return {
        "folders": [str(f) for f in keyring.folders],
        "bundle_keys": {e.id: e.bundle.key_names() for e in entries},
        "folder_keys": folder_keys,
        "rejected": rejected,
    }
