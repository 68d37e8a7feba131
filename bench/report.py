"""The summary table: one row per measure, ours against its baseline, with the goal and whether it is met."""

from __future__ import annotations

from typing import Any

Row = dict[str, str]


def _row(measure: str, ours: str, baseline: str, versus: str, goal: str, met: bool | None) -> Row:
    verdict = "n/a" if met is None else ("yes" if met else "NO")
    return {
        "measure": measure,
        "ours": ours,
        "baseline": baseline,
        "vs": versus,
        "goal": goal,
        "met": verdict,
    }


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f} M rows/s"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def startup_rows(result: dict[str, Any]) -> list[Row]:
    slowest = result["slowest"]
    return [
        _row(
            f"`--help`, slowest of {len(result['steps'])} (median of {result['repeats']})",
            f"{slowest['median_s']:.2f} s ({slowest['step']})",
            "-",
            "-",
            "<= 1 s",
            result["goal_met"],
        )
    ]


def score_import_rows(result: dict[str, Any]) -> list[Row]:
    heavy = ", ".join(result["heavy_present"]) or "none"
    return [
        _row(
            "`score` imports feast / evidently",
            ", ".join(result["forbidden_present"]) or "neither",
            f"(also loaded: {heavy})",
            "-",
            "neither",
            result["goal_met"],
        )
    ]


def parse_rows(result: dict[str, Any]) -> list[Row]:
    rows = []
    variants = result["variants"]
    for mode, added in result["added"].items():
        ours, trivial = variants[f"dags_{mode}"], variants[f"trivial_{mode}"]
        rows.append(
            _row(
                f"DagBag fill of dags/ ({mode}), median of {result['repeats']}",
                f"{ours['fill_seconds']:.3f} s",
                f"{trivial['fill_seconds']:.3f} s (trivial Asset DAG)",
                f"+{added['added_fill_s_vs_trivial_dag']:.3f} s",
                "<= 0.3 s added",
                added["added_fill_s_vs_trivial_dag"] <= 0.3,
            )
        )
        rows.append(
            _row(
                f"parse process ({mode}) vs bare airflow.sdk + KPO import",
                f"{ours['process_wall_s']:.2f} s",
                f"{variants['airflow_imports']['process_wall_s']:.2f} s",
                f"{added['added_process_s_vs_bare_imports']:+.2f} s",
                "(context)",
                None,
            )
        )
        rows.append(
            _row(
                f"ML modules after parsing ({mode})",
                ", ".join(added["ml_modules_added_by_ours"]) or "none added",
                "Airflow's own: " + (", ".join(added["ml_modules_of_trivial_dag"]) or "none"),
                "-",
                "none present",
                not added["ml_modules_added_by_ours"],
            )
        )
    return rows


def training_rows(result: dict[str, Any]) -> list[Row]:
    ours, seed = result["ours"], result.get("seed_random_forest")
    if seed is None:
        return []
    return [
        _row(
            f"train fit, {result['snapshot']['train_rows']:,} rows, median of {len(ours['fit_seconds_all'])}",
            f"{ours['fit_seconds']:.2f} s",
            f"{seed['fit_seconds']:.2f} s (RandomForest)",
            _times(result["speedup_fit"]),
            ">= 20x faster",
            result["goals"]["speedup >= 20x"],
        ),
        _row(
            "holdout ROC-AUC",
            f"{ours['holdout_roc_auc']:.4f}",
            f"{seed['holdout_roc_auc']:.4f}",
            f"{result['auc_difference']:+.4f}",
            "equal or better",
            result["goals"]["auc equal or better"],
        ),
        *baseline_rows(
            f"demo, {result['snapshot']['holdout_rows']:,} holdout rows",
            ours,
            result["hist_gradient_boosting"],
            result["versus_hist_gradient_boosting"],
        ),
        _row(
            "train step end to end (CLI, MLflow logging, registration)",
            f"{ours['step_wall_seconds']:.2f} s",
            f"{seed['fit_seconds']:.2f} s (fit only)",
            _times(result["speedup_step_end_to_end"]),
            "(context)",
            None,
        ),
        _row("GPU vs CPU training", "not measured (no GPU)", "-", "-", ">= 10x", None),
    ]


def baseline_rows(
    dataset: str, ours: dict[str, Any], baseline: dict[str, Any], versus: dict[str, Any]
) -> list[Row]:
    """Holdout ROC-AUC against the untuned HistGradientBoosting, and the refit's effect, on one dataset."""
    raw, features = baseline["raw"], baseline["features"]
    return [
        _row(
            f"holdout ROC-AUC vs untuned HistGradientBoosting on {len(baseline['raw_columns'])} raw columns"
            f" ({dataset})",
            f"{ours['holdout_roc_auc']:.4f}",
            f"{raw['holdout_roc_auc']:.4f}",
            f"{versus['auc_difference']:+.4f} ({_times(versus['auc_ratio'])})",
            "equal or better",
            versus["goal_met"],
        ),
        _row(
            f"holdout ROC-AUC vs the same HistGradientBoosting on every pipeline feature ({dataset})",
            f"{ours['holdout_roc_auc']:.4f}",
            f"{features['holdout_roc_auc']:.4f}",
            f"{versus['auc_difference_features']:+.4f}",
            "(context)",
            None,
        ),
        _row(
            f"holdout ROC-AUC, refit on the whole train split vs early-stopped booster ({dataset})",
            f"{ours['holdout_roc_auc']:.4f}" + ("" if ours.get("refit", True) else " (refit off)"),
            f"{ours['holdout_roc_auc_without_refit']:.4f}",
            f"{versus['refit_effect']:+.4f}",
            "(context)",
            None,
        ),
    ]


def example_rows(result: dict[str, Any]) -> list[Row]:
    """The example dataset: the pipeline's model against the untuned baseline."""
    dataset = f"{result['snapshot']['dataset']}, {result['snapshot']['holdout_rows']:,} holdout rows"
    return baseline_rows(dataset, result["ours"], result["hist_gradient_boosting"], result)


def training_diagnostic_rows(result: dict[str, Any]) -> list[Row]:
    fits = result.get("diagnostic_fit_seconds")
    if not fits:
        return []
    default, passive = fits["default OpenMP wait policy"], fits["OMP_WAIT_POLICY=PASSIVE"]
    return [
        _row(
            "train fit, OMP_WAIT_POLICY=PASSIVE vs default (diagnostic)",
            f"{passive['median_seconds']:.2f} s",
            f"{default['median_seconds']:.2f} s (default policy)",
            _times(ratio_or_none(default["median_seconds"], passive["median_seconds"])),
            "(context)",
            None,
        )
    ]


def ratio_or_none(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def scoring_rows(result: dict[str, Any], trees: dict[str, str]) -> list[Row]:
    """Per size and model: ours against the slower of bare predict and bare I/O (the goal), and the seed."""
    rows = []
    for label, model in result["models"].items():
        for entry in model["sizes"]:
            ours, bare, bare_io, seed = entry["ours"], entry["bare"], entry["bare_io"], entry.get("seed")
            name = f"score {entry['rows'] / 1e6:g}M rows, {label} model ({trees.get(label, '?')})"
            versus = f"{_times(entry['ours_vs_limit'])} of {entry['limit']}"
            if seed:
                versus += f"; {_times(entry['ours_vs_seed'])} seed"
            baseline = f"bare predict {_rate(bare['rows_per_s'])}; bare I/O {_rate(bare_io['rows_per_s'])}"
            if seed:
                baseline += f"; seed {_rate(seed['rows_per_s'])}, {seed['peak_rss_mb']:.0f} MB"
            rows.append(
                _row(
                    name,
                    f"{_rate(ours['rows_per_s'])}, {ours['peak_rss_mb']:.0f} MB",
                    baseline,
                    versus,
                    ">= 0.8x the slower bare; >= 4x seed at 5M; < 1 GB",
                    entry["goal_met"]
                    and ours["peak_rss_mb"] < 1024
                    and (entry["rows"] != 5_000_000 or not seed or entry["ours_vs_seed"] >= 4),
                )
            )
        growth = model["ours_peak_rss_growth"]
        rows.append(
            _row(
                f"score peak RSS growth, smallest to largest ({label} model)",
                "-" if growth is None else f"{growth:+.0%}",
                "-",
                "-",
                "< 20%",
                model["goals"]["RSS growth < 20% smallest to largest"],
            )
        )
    return rows


def drift_rows(result: dict[str, Any]) -> list[Row]:
    ours, baseline = result["ours_total"], result["evidently_default_total"]
    size = f"{result['rows'] / 1e6:g}M + {result['rows'] / 1e6:g}M rows x {result['features']}"
    rows = [
        _row(
            f"drift, {size} (median over {ours['seeds']} / {baseline.get('seeds', 0)} seeds)",
            f"{ours['median_seconds']:.1f} s",
            f"{baseline['median_seconds']:.1f} s (DataDriftPreset)" if baseline else "not run",
            _times(result["median_speedup"]),
            ">= 15x faster",
            None if result["median_speedup"] is None else result["median_speedup"] >= 15,
        ),
        _row(
            "drift extra RSS over imports (max)",
            f"{ours['max_extra_rss_mb']:.0f} MB",
            f"{baseline['max_extra_rss_mb']:.0f} MB" if baseline else "-",
            "-",
            "<= 300 MB",
            ours["max_extra_rss_mb"] <= 300,
        ),
        _row(
            "drift detection (drifted columns found, false positives)",
            f"{ours['found']}/{ours['expected']}, {ours['false_positives']} FP",
            f"{baseline['found']}/{baseline['expected']}, {baseline['false_positives']} FP"
            if baseline
            else "-",
            "-",
            "100% found, 0 FP",
            ours["found"] == ours["expected"] and ours["false_positives"] == 0,
        ),
    ]
    return rows


def summary_rows(results: dict[str, Any]) -> list[Row]:
    """Every section's rows, in the order the sections ran."""
    rows: list[Row] = []
    if "startup" in results:
        rows += startup_rows(results["startup"])
    if "score_imports" in results:
        rows += score_import_rows(results["score_imports"])
    if "parse" in results:
        rows += parse_rows(results["parse"])
    if "training" in results:
        rows += training_rows(results["training"]) + training_diagnostic_rows(results["training"])
    if "example" in results:
        rows += example_rows(results["example"])
    if "scoring" in results:
        full = results.get("full_model", {})
        trees = {"full": f"{full.get('trees', '?')} trees, depth {full.get('max_depth', '?')}"}
        trees["pipeline"] = f"{results['training']['ours']['best_iteration'] + 1} trees"
        rows += scoring_rows(results["scoring"], trees)
    if "drift" in results:
        rows += drift_rows(results["drift"])
    if "distributed" in results:
        rows += distributed_rows(results["distributed"])
    return rows


def distributed_rows(result: dict[str, Any]) -> list[Row]:
    """Per size: fit wall time, peak memory and holdout ROC-AUC of xgboost.dask against single node."""
    rows = []
    for entry in result["sizes"]:
        size, dask, alone = entry["snapshot"], entry["dask"], entry["single"]
        over = " (train split > one worker's memory_limit)" if entry["exceeds_worker_memory_limit"] else ""
        label = f"dask x{result['workers']}, {size['rows'] / 1e6:g}M rows"
        label += f", {size['train_in_memory_mib']:.0f} MiB{over}"
        rows.append(
            _row(
                f"{label}: read + fit",
                f"{dask['read_and_fit_seconds']:.1f} s"
                f" (+{dask['cluster_start_seconds']:.0f} s cluster start)",
                f"{alone['read_and_fit_seconds']:.1f} s single node",
                _times(alone["read_and_fit_seconds"] / dask["read_and_fit_seconds"]),
                "-",
                None,
            )
        )
        rows.append(
            _row(
                f"{label}: peak RSS",
                f"{max(dask['worker_peak_rss_mib']):.0f} MiB per worker (max)",
                f"{alone['peak_rss_mb']:.0f} MB single process",
                "-",
                f"<= memory_limit {result['memory_limit']}",
                max(dask["worker_peak_rss_mib"]) <= result["memory_limit_mib"],
            )
        )
        rows.append(
            _row(
                f"{label}: holdout ROC-AUC",
                f"{dask['holdout_roc_auc']:.4f}",
                f"{alone['holdout_roc_auc']:.4f}",
                f"{entry['auc_difference']:+.4f}",
                "|diff| <= 0.005",
                abs(entry["auc_difference"]) <= 0.005,
            )
        )
    return rows


def table(rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal too)."""
    headers = {"measure": "measure", "ours": "ours", "baseline": "baseline", "vs": "ours vs baseline"}
    headers |= {"goal": "goal", "met": "met"}
    widths = {key: max(len(title), *(len(row[key]) for row in rows)) for key, title in headers.items()}
    lines = ["| " + " | ".join(title.ljust(widths[key]) for key, title in headers.items()) + " |"]
    lines.append("|" + "|".join("-" * (widths[key] + 2) for key in headers) + "|")
    for row in rows:
        lines.append("| " + " | ".join(row[key].ljust(widths[key]) for key in headers) + " |")
    return "\n".join(lines)
