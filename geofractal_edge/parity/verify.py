"""Verify a bundle on this host: run the runtime on the golden inputs, compare with torch's outputs.

Torch-free: the reference outputs are the ones torch produced at export, stored in the bundle.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from geofractal_edge.artifacts import Bundle, GoldenCase, open_bundle
from geofractal_edge.errors import BundleError
from geofractal_edge.parity.report import Check, ParityReport
from geofractal_edge.parity.routing import route_agreement
from geofractal_edge.parity.stats import error_stats, merge_stats
from geofractal_edge.parity.tasks import METRICS
from geofractal_edge.parity.tolerances import tolerances_for
from geofractal_edge.runtimes import Session


def verify_bundle(bundle: Bundle | Path | str, *, session: Session | None = None) -> ParityReport:
    started = time.perf_counter()
    if not isinstance(bundle, Bundle):
        bundle = open_bundle(Path(bundle))
    session = session or Session(bundle)
    manifest = bundle.manifest
    cases = bundle.golden_cases()
    if not cases:
        raise BundleError(f"bundle {bundle.path} has no golden cases", "re-export it with `gfedge export`")
    results = [session.run(case.inputs, key=case.key) for case in cases]
    report = compare_cases(
        cases,
        results,
        family=manifest.family,
        precision=manifest.precision,
        target=manifest.target.name,
        task_metric=manifest.task.metric,
        overrides=manifest.tolerance_overrides,
        roles={o.name: o.role for o in manifest.outputs},
    )
    report.providers_used = list(session.providers_used)
    report.fallbacks = list(session.fallbacks)
    report.seconds = time.perf_counter() - started
    return report


def compare_cases(
    cases: list[GoldenCase],
    results: list[dict[str, np.ndarray]],
    *,
    family: str,
    precision: str,
    target: str,
    task_metric: str,
    overrides: dict | None = None,
    roles: dict[str, str] | None = None,
) -> ParityReport:
    """Compare reference outputs (in each case) with results, and judge against the tolerances.

    With route outputs (role "routes"), routing decisions are compared on their own and the numeric
    checks run only on rows whose routes all agree (see routing.py).
    """
    limits = tolerances_for(precision, overrides)
    metric = METRICS[task_metric]
    roles = roles or {}
    output_names = [n for n in cases[0].outputs if roles.get(n, "data") not in ("routes", "margins")]
    route_names = [n for n in cases[0].outputs if roles.get(n) == "routes"]
    shape_ok = all(r[n].shape == c.outputs[n].shape for c, r in zip(cases, results) for n in output_names)
    per_output = {
        n: merge_stats([(c.outputs[n], r[n]) for c, r in zip(cases, results)]) for n in output_names
    } if shape_ok else {}
    torch_hits = [metric(c.outputs, c.labels) for c in cases]
    runtime_hits = [metric(r, c.labels) for c, r in zip(cases, results)]
    torch_score = 100.0 * sum(h for h, _ in torch_hits) / max(1, sum(n for _, n in torch_hits))
    runtime_score = 100.0 * sum(h for h, _ in runtime_hits) / max(1, sum(n for _, n in runtime_hits))
    primary = per_output.get(output_names[0], {})
    routing = None
    if shape_ok and route_names:
        routing, primary = _routing(cases, results, route_names, roles, output_names[0], limits)
    metrics = {
        **{k: primary.get(k, float("nan")) for k in ("max_abs", "mean_abs", "q99_abs", "sqnr_db", "cosine", "nonfinite")},
        task_metric: {"torch": torch_score, "runtime": runtime_score, "delta_points": runtime_score - torch_score},
        "outputs": per_output,
    }
    if routing is not None:
        metrics["route_agreement"] = routing
    checks = [
        Check("shapes_match", float(shape_ok), 1.0, "min"),
        Check("nonfinite", float(primary.get("nonfinite", 1)), 0.0, "max"),
        Check("sqnr_db", primary.get("sqnr_db", float("nan")), limits["sqnr_db_min"], "min"),
        Check("cosine", primary.get("cosine", float("nan")), limits["cosine_min"], "min"),
        Check(f"{task_metric}_delta_points", abs(runtime_score - torch_score), limits["task_delta_max"], "max"),
    ]
    if routing is not None:
        checks.append(Check("route_agreement", routing["min"], limits["route_agreement_min"], "min"))
    detail = [_case_detail(c, r, metric, task_metric, output_names[0]) for c, r in zip(cases, results)] if shape_ok else []
    return ParityReport(family, precision, target, task_metric, metrics, checks, detail)


def _case_detail(case: GoldenCase, result: dict, metric, name: str, output: str) -> dict:
    th, tn = metric(case.outputs, case.labels)
    rh, rn = metric(result, case.labels)
    stats = error_stats(case.outputs[output], result[output])
    return {"case": case.name, "key": case.key, f"{name}_torch": 100.0 * th / tn, f"{name}_runtime": 100.0 * rh / rn, "sqnr_db": stats["sqnr_db"]}


def _routing(cases, results, route_names, roles, primary_name, limits) -> tuple[dict, dict]:
    """Route agreement per routed output, and the primary output's stats on rows where all routes agree."""
    margin_name = next((n for n in cases[0].outputs if roles.get(n) == "margins"), None)
    token_ndim = cases[0].outputs[primary_name].ndim - 1
    summary, masks = {}, [np.ones(c.outputs[primary_name].shape[:-1], bool) for c in cases]
    for name in route_names:
        part, part_masks = route_agreement(
            [c.outputs[name] for c in cases], [r[name] for r in results],
            [c.outputs[margin_name] for c in cases] if margin_name else None,
            token_ndim=token_ndim, near_tie_rel=limits.get("near_tie_rel", 0.01), case_names=[c.name for c in cases],
        )
        summary[name] = part
        masks = [m & pm for m, pm in zip(masks, part_masks)]
    agreed = [(c.outputs[primary_name][m], r[primary_name][m]) for c, r, m in zip(cases, results, masks)]
    rows = sum(int(m.sum()) for m in masks)
    stats = merge_stats(agreed) if rows else {"sqnr_db": float("nan"), "cosine": float("nan"), "nonfinite": 0}
    merged = {"min": min(s["min"] for s in summary.values()), "rows_all_agree": rows,
              "rows": sum(m.size for m in masks), "by_output": summary}
    return merged, {**stats, "measured_on": "rows where all routes agree"}
