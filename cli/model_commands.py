"""Commands about models and artifacts: train, evaluate, compare, tune, summarize and report.

``train`` writes an artifact; the others read one (or a training config) and print what it is
worth. Imports of the jobs stay inside the functions so that ``--help`` does not load the models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.text import Text

from cli.arguments import (
    DEFAULT_ARTIFACT,
    artifact_folder,
    catalog_spec,
    checked_later,
    data_location,
    existing_file,
    existing_folder,
    non_negative_int,
    positive_float,
    spark_master,
)
from cli.artifact_key import artifact_signer
from cli.errors import FlagError, UserError
from cli.json_output import emit_json
from cli.serving_commands import EXCLUDE_HELP, EXCLUSION_CHOICES
from cli.subcommand import ARTIFACT_HELP, Subcommands, add_artifact_argument, add_command
from engine.errors import PersonaEngineError
from training.console_output import print_table, stage_lines, stderr_console, stdout_console

TRAIN_EXAMPLES = """
    examples:
      persona-engine train --config training/configs/demo.toml
      persona-engine train --config my.toml --data data/shop --output artifacts
      persona-engine train --config my.toml --json > train.json
      persona-engine train --config my.toml --artifact-key /run/secrets/artifact-signing.pem
      persona-engine train --config my.toml --engine spark --master spark://spark-master:7077
      spark-submit --master yarn cli/spark_submit.py train --config my.toml --engine spark

    engines: 'local' trains in this process; 'spark' runs the persona EM, ALS and persona popularity on
    Apache Spark (pyspark; --master or [engine] master, default spark-submit's or local[*]) and writes
    the same artifact. The Spark engine trains als, persona_popularity and popularity only.

    signing: with --artifact-key (or PERSONA_ENGINE_ARTIFACT_KEY_FILE) naming an Ed25519 private key
    (PEM; make one with 'openssl genpkey -algorithm ed25519 -out artifact-signing.pem'), the artifact's
    manifest is signed (manifest.sig), and 'serve --artifact-key' with the key (or its public half,
    'openssl pkey -in artifact-signing.pem -pubout') accepts it. Without a key the artifact is unsigned.
    """

EVALUATE_EXAMPLES = """
    examples:
      persona-engine evaluate --artifact artifacts/latest
      persona-engine evaluate --artifact artifacts/20261123T150000Z --data data/demo --json
    """

SUMMARY_EXAMPLES = """
    examples:
      persona-engine summary --artifact artifacts/latest --customers 3
      persona-engine summary --artifact artifacts/latest --exclude seen

    Each customer's products are the ones 'recommend' shows them (and batch-recommend and the API
    return): by default without what they bought; --exclude seen also leaves out what they viewed or
    carted, as the offline evaluation does.
    """

REPORT_EXAMPLES = """
    examples:
      persona-engine report --artifact artifacts/latest
      persona-engine report --artifact artifacts/latest --out reports/shop.html --data data/demo
      persona-engine report --artifact artifacts/20261123T150000Z --json

    The page's numbers are written beside it under its name with .json (reports/shop.html:
    reports/shop.json), so reports on several artifacts can share a folder.
    """

COMPARE_EXAMPLES = """
    examples:
      persona-engine compare --config training/configs/ml100k.toml
      persona-engine compare --config training/configs/demo.toml --json > compare.json
      persona-engine compare --config training/configs/ml100k.toml --output compare-ml100k.json
      persona-engine compare --config training/configs/demo.toml --trials 20 --search-seed 1
    """

TUNE_EXAMPLES = """
    examples:
      persona-engine tune --config training/configs/ml100k.toml --budget-seconds 600 \\
          --write-config ml100k-600s.toml
      persona-engine tune --config training/configs/demo.toml --budget-seconds 300 \\
          --models als,bpr --write-config demo-als-bpr.toml
      persona-engine tune --config demo-als-bpr.toml --budget-seconds 120 --models als \\
          --write-config demo-als-bpr.toml --overwrite

    The tuned config is CONFIG with each searched model's best settings; the models not searched
    (not in --models) keep the settings CONFIG gives them, and the output lists both. It goes to
    --write-config, or CONFIG's name with -tuned (demo.toml: demo-tuned.toml). tune refuses to
    replace an existing file unless --overwrite is given: the -tuned configs under
    training/configs/ hold long searches. The last example re-tunes ALS in place and keeps BPR.
    With --overwrite and another --config, tune warns before searching when the file it replaces
    sets a model it does not search otherwise: that earlier tuning would be lost (JSON:
    settings_replaced).
    """


def add_train_command(sub: Subcommands) -> None:
    t = add_command(
        sub,
        "train",
        "train the configured models and write a versioned artifact",
        TRAIN_EXAMPLES,
        cmd_train,
    )
    # Checked by cmd_train, after --artifact-key: a bad key is refused before anything else is read.
    t.add_argument("--config", type=Path, required=True, help="training config (TOML)")
    t.add_argument(
        "--data",
        type=data_location,
        help="data folder (the Spark engine also takes hdfs:// or s3a:// URIs); overrides [data] path",
    )
    t.add_argument("--output", type=Path, help="artifact root; overrides [output] root of the config")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument(
        "--artifact-key",
        type=existing_file,
        metavar="FILE",
        help="Ed25519 private key (PEM) that signs the artifact's manifest (env "
        "PERSONA_ENGINE_ARTIFACT_KEY_FILE); checked before training starts",
    )
    t.add_argument(
        "--engine",
        choices=("local", "spark"),
        help="where training runs; overrides [engine] name of the config (default: local)",
    )
    t.add_argument(
        "--master",
        type=spark_master,
        help="Spark master URL for --engine spark (local[2], spark://host:7077, yarn, k8s://...); "
        "overrides [engine] master",
    )


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from training.config import load_config
    from training.train_job import run_training

    signer = artifact_signer(args.artifact_key, dict(os.environ))
    config = load_config(checked_later("--config", existing_file, str(args.config)))
    if args.output:
        config = dataclasses.replace(config, output=dataclasses.replace(config.output, root=str(args.output)))
    if args.data:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, path=args.data))
    engine = dataclasses.replace(
        config.engine,
        name=args.engine or config.engine.name,
        master=args.master or config.engine.master,
    )
    if engine.name != "spark" and args.master:
        raise FlagError("--master", "a Spark master URL needs --engine spark (or [engine] name = 'spark')")
    config = dataclasses.replace(config, engine=engine)
    if engine.name == "spark":
        from training.spark.job import run_spark_training

        result = run_spark_training(config, show_progress=not (args.json or args.no_progress), signer=signer)
    else:
        result = run_training(config, show_progress=not (args.json or args.no_progress), signer=signer)
    if args.json:
        emit_json(
            {
                "artifact": str(result.artifact_path),
                "version": result.version,
                "metrics": [r.to_dict() for r in result.results],
                "fit_seconds": result.fit_seconds,
                "persona_accuracy": result.persona_accuracy,
                "decision_quality": result.decision_quality,
                "served_models": result.served_models,
                "summary": result.summary,
                "signing_key": signer.key_id if signer else None,
                "engine": _engine_record(result.artifact_path),
            }
        )
        return 0
    held_out = (
        f"predefined test events of {config.split.test_events}"
        if config.split.method == "predefined"
        else f"held-out last {config.split.test_days} days"
    )
    _print_skipped_rows(result.summary.get("skipped_rows") or {})
    _print_results(result.results, config.evaluation.k, f"evaluation ({held_out})")
    served = result.served_models
    refit = served["refit_on_all_events"]
    if refit:
        print_table(
            "training time (seconds)",
            ["model", "on the split", "refit on all events"],
            [[m, s, served["fit_seconds"].get(m, float("nan"))] for m, s in result.fit_seconds.items()],
        )
    else:
        print_table("training time", ["model", "seconds"], [[m, s] for m, s in result.fit_seconds.items()])
    _print_persona_accuracy(result.persona_accuracy, served["persona_accuracy"] if refit else None)
    if result.decision_quality:
        print_table(
            "offer and layout response estimates vs planted rates",
            ["decision", "mean abs error", "persona x arm pairs"],
            [[d, q["mean_abs_error"], q["pairs"]] for d, q in result.decision_quality.items()],
        )
    s = result.summary
    for warning in s.get("warnings", []):
        stdout_console.print(Text.assemble(("warning:", "yellow"), " ", warning))
    if s["best_model"] is None:
        # The artifact's models load in name order, and Personalizer serves the first without a best.
        stdout_console.print(
            f"best model: none: no model placed a held-out item in its top {config.evaluation.k}, so the "
            f"evaluation cannot choose; the server serves {sorted(result.fit_seconds)[0]!r} (the first by "
            "name) unless serve --model names another",
            highlight=False,
        )
    else:
        stdout_console.print(
            Text.assemble(
                "best model: ",
                (s["best_model"], "bold"),
                f", NDCG ratio to popularity {s['best_ndcg_ratio_to_popularity'] or float('nan'):.2f}; "
                f"cold start ratio {s['cold_start_ndcg_ratio_to_popularity'] or float('nan'):.2f}",
            )
        )
    drift = s.get("live_drift_threshold")
    if drift is not None:
        stdout_console.print(
            f"live drift threshold: {drift['threshold']:.2f} nats, calibrated to "
            f"{drift['target_false_alarm']:.0%} false alarms on {drift['tested_customers']:,} customers' "
            "shuffled histories"
            if drift["threshold"] is not None
            else f"live drift threshold: not calibrated: {drift['reason']}",
            highlight=False,
        )
    if "event_log" in s:
        logged = s["event_log"]
        stdout_console.print(
            f"event log {logged['path']}: {logged['added']:,} of {logged['read']:,} events added "
            f"({logged['already_in_shop']:,} already in the shop's events, "
            f"{logged['unknown_items']:,} for items the shop does not list, "
            f"{logged.get('malformed_ids', 0):,} with an id the data contract refuses)",
            highlight=False,
        )
    _print_served_models(served)
    stages = s["stages"]
    print_table("time by stage (seconds)", [x["stage"] for x in stages], [[x["seconds"] for x in stages]])
    stdout_console.print(f"artifact: {result.artifact_path} (version {result.version}, {s['seconds']:.1f} s)")
    stdout_console.print(
        f"signed with key {signer.key_id}" if signer else "unsigned (no --artifact-key)", highlight=False
    )
    spark = _engine_record(result.artifact_path)
    if spark["name"] == "spark":
        stdout_console.print(
            f"trained on Spark {spark['spark_version']} (master {spark['master']}, "
            f"{spark['partitions']} partitions); evaluation {spark['evaluation']}",
            highlight=False,
        )
    return 0


def _engine_record(artifact: Path) -> dict[str, Any]:
    """The manifest's ``engine`` record: where the artifact was trained (``{"name": "local"}`` if absent)."""
    manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    return dict(manifest.get("engine") or {"name": "local"})


def _print_skipped_rows(skipped: dict[str, dict[str, int]]) -> None:
    """What ``[data] skip_invalid = true`` left out, per table and reason: data lost must be seen."""
    rows: list[list[Any]] = [
        [table, reason, count] for table, reasons in skipped.items() for reason, count in reasons.items()
    ]
    if not rows:
        return
    total = sum(count for reasons in skipped.values() for count in reasons.values())
    print_table(f"rows skipped ([data] skip_invalid = true): {total:,}", ["table", "reason", "rows"], rows)


def _print_served_models(served: dict[str, Any]) -> None:
    """Say what the artifact serves: the figures above are always those of the split's models."""
    from training.served_models import ServedModels

    described = ServedModels.of({"served_models": served}).describe()
    if served["refit_on_all_events"]:
        stdout_console.print(
            Text.assemble(
                "served models: ",
                (described, "bold"),
                f" ({served['seconds']:.1f} s)\n"
                "  (the evaluation above is of the same models fitted on the split)",
            )
        )
    else:
        stdout_console.print(
            f"served models: {described} ([output] refit_on_all_events = false): the evaluated ones",
            highlight=False,
        )


def add_evaluate_command(sub: Subcommands) -> None:
    e = add_command(
        sub,
        "evaluate",
        "re-evaluate an artifact's models on its data split, overall, per persona and cold start",
        EVALUATE_EXAMPLES,
        cmd_evaluate,
    )
    add_artifact_argument(e)
    e.add_argument(
        "--data", type=existing_folder, help="data folder; default: the one the artifact was trained on"
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bars")


def _integrity(artifact: Path) -> str:
    """What protects the artifact's manifest (signed, unsigned...), verified with the key of
    PERSONA_ENGINE_ARTIFACT_KEY_FILE when it is set; reads the manifest only."""
    import os

    from engine.artifact import ENV_ARTIFACT_KEY_FILE, ArtifactVerifier, manifest_integrity

    key_file = os.environ.get(ENV_ARTIFACT_KEY_FILE)
    try:
        verifier = ArtifactVerifier.from_file(Path(key_file)) if key_file else None
    except PersonaEngineError as error:
        raise UserError(f"{ENV_ARTIFACT_KEY_FILE}: {error}") from None
    return manifest_integrity(artifact, verifier).describe()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate_job import run_evaluation

    integrity = _integrity(args.artifact)
    show_progress = not (args.json or args.no_progress)
    with stage_lines("evaluate", show_progress) as stage:
        report = run_evaluation(args.artifact, data_path=args.data, show_progress=show_progress, stage=stage)
    if args.json:
        emit_json({**report.to_dict(), "manifest": integrity})
        return 0
    stdout_console.print(f"artifact {report.version}: {integrity}", highlight=False)
    if report.served_models.refit_on_all_events:
        stdout_console.print(
            f"Artifact {report.version} serves models {report.served_models.describe()}: they have seen "
            "this test period, so the split's models are fitted again from its config and scored instead, "
            "as train evaluated them.",
            highlight=False,
        )
        title = f"evaluation of artifact {report.version} (split models fitted again)"
    else:
        title = f"evaluation of artifact {report.version} (its own models, fitted on the split)"
    _print_results(report.results, report.k, title)
    _print_context_results(report.context_results, report.k)
    _print_steering_results(report.steering_results, report.k)
    _print_drift_evaluation(report.drift_evaluation, report.k)
    _print_session_evaluation(report.session_evaluation, report.k)
    for warning in report.warnings:
        stdout_console.print(Text.assemble(("warning:", "yellow"), " ", warning))
    same = [model for model, equal in report.matches_manifest.items() if equal]
    differ = [model for model, equal in report.matches_manifest.items() if not equal]
    if not differ:
        stdout_console.print("every figure reproduces train's (in the manifest)", highlight=False)
    else:
        why = []
        if report.served_models.refit_on_all_events:
            why.append(
                "train ran without [training] deterministic = true: BPR and LightFM fitted with several "
                "Hogwild threads, which evaluate's single-threaded fit cannot repeat exactly"
            )
        if not report.data_matches_artifact:
            why.append("the data is not the data the artifact was trained on")
        stdout_console.print(
            f"reproduces train's figures: {', '.join(same) or 'none'}; differs from them: "
            f"{', '.join(differ)}" + (f" ({'; '.join(why)})" if why else ""),
            highlight=False,
        )
    _print_persona_accuracy(report.persona_accuracy)
    return 0


def _print_results(results: list[Any], k: int, title: str) -> None:
    from training.evaluation import results_table, segment_table

    columns, rows = results_table(results, k)
    print_table(title, columns, rows)
    columns, rows = segment_table(results, k)
    print_table("", columns, rows)


def _print_context_results(results: list[Any], k: int) -> None:
    """Held-out events by shopping context, scored with the context's mix (as served) and the overall mix."""
    from training.evaluation import context_mix_table

    if results:
        columns, rows = context_mix_table(results, k)
        print_table("held-out events by shopping context: context mix vs overall mix", columns, rows)


def _print_steering_results(results: list[Any], k: int) -> None:
    """Requested pure personas for known customers, per steering setting ([personas] steering)."""
    from training.steering_evaluation import steering_table

    if results:
        columns, rows = steering_table(results, k)
        print_table("steering: a pure persona requested for known customers led by another", columns, rows)


def _print_drift_evaluation(record: dict[str, Any] | None, k: int) -> None:
    """Customers flagged as drifting at the end of training: their recent mix (as served) vs overall."""
    from training.drift_evaluation import drift_mix_table

    if record and record.get("results"):
        title, columns, rows = drift_mix_table(record, k)
        print_table(title, columns, rows)


def _print_session_evaluation(record: dict[str, Any] | None, k: int) -> None:
    """Known customers' first held-out day as a live session: folded into their vector vs fitted."""
    from training.session_evaluation import session_table

    if record and record.get("results"):
        title, columns, rows = session_table(record, k)
        print_table(title, columns, rows)


def _print_persona_accuracy(
    accuracy: dict[str, Any] | None, refit_accuracy: dict[str, Any] | None = None
) -> None:
    """The split's mixes against planted truth, and the served mixes' beside them after a refit."""
    if not accuracy:
        return
    title = "persona inference vs planted mixes"
    keys = [key for key, value in accuracy.items() if isinstance(value, int | float)]
    if refit_accuracy:
        rows = [[key, accuracy[key], refit_accuracy.get(key, float("nan"))] for key in keys]
        print_table(title, ["measure", "split", "refit on all events"], rows)
    else:
        print_table(title, ["measure", "value"], [[key, accuracy[key]] for key in keys])


def add_summary_command(sub: Subcommands) -> None:
    s = add_command(
        sub,
        "summary",
        "a readable summary of an artifact: metrics and a few customers with mix and products",
        SUMMARY_EXAMPLES,
        cmd_summary,
    )
    add_artifact_argument(s)
    s.add_argument("--customers", type=non_negative_int, default=3, help="how many example customers to show")
    s.add_argument("--exclude", choices=EXCLUSION_CHOICES, default="purchased", help=EXCLUDE_HELP)


def cmd_summary(args: argparse.Namespace) -> int:
    from training.demo_summary import summarize

    integrity = _integrity(args.artifact)
    document = summarize(
        args.artifact, n_customers=args.customers, exclude=args.exclude, print_tables=not args.json
    )
    if args.json:
        emit_json({**document, "manifest": integrity})
    else:
        stdout_console.print(f"manifest: {integrity}", highlight=False)
    return 0


def add_report_command(sub: Subcommands) -> None:
    rp = add_command(
        sub,
        "report",
        "write a self-contained HTML report on an artifact (and its numbers in a JSON file beside it)",
        REPORT_EXAMPLES,
        cmd_report,
    )
    # Not add_artifact_argument: its default is checked when parsed, which would refuse 'report ARTIFACT'
    # (the deprecated positional) when artifacts/latest is absent.
    rp.add_argument("--artifact", type=artifact_folder, help=f"{ARTIFACT_HELP} (default: {DEFAULT_ARTIFACT})")
    rp.add_argument(
        "legacy_artifact",
        nargs="?",
        type=artifact_folder,
        metavar="ARTIFACT",
        help="deprecated: the artifact as a positional argument; use --artifact like every other command",
    )
    rp.add_argument(
        "--out",
        type=Path,
        default=Path("report.html"),
        help="HTML file; its numbers go beside it in the same name with .json (shop.html: shop.json)",
    )
    rp.add_argument(
        "--data", type=existing_folder, help="data folder; default: the one the artifact was trained on"
    )
    rp.add_argument("--no-progress", action="store_true", help="no progress lines")


def _refuse_a_report_inside_the_artifact(out: Path, artifact: Path) -> None:
    """An artifact version holds exactly the files its manifest lists, and every command checks that:
    a report written into one broke it for recommend, summary and serve (a data scientist's
    walkthrough wrote ``--out artifacts/x/latest/report.html``)."""
    versions = {artifact.resolve()}
    if (artifact / "latest").exists():
        versions.add((artifact / "latest").resolve())
    target = out.resolve()
    inside = next((v for v in versions if target.is_relative_to(v) and (v / "manifest.json").is_file()), None)
    if inside is not None:
        raise FlagError(
            "--out",
            f"{out}: inside the artifact version {inside.name}, whose files must be exactly those its "
            "manifest lists (every command checks): write the report beside the artifact instead",
        )


def cmd_report(args: argparse.Namespace) -> int:
    from training.report.evaluation_report import write_report

    if args.legacy_artifact is not None:
        if args.artifact is not None and args.artifact != args.legacy_artifact:
            raise FlagError(
                "--artifact",
                f"{args.artifact}: the artifact is given twice (and as ARTIFACT {args.legacy_artifact})",
            )
        args.artifact = args.legacy_artifact
        stderr_console.print(
            f"note: 'report {args.legacy_artifact}' is deprecated; use 'report --artifact "
            f"{args.legacy_artifact}' as every other command does",
            highlight=False,
        )
    if args.artifact is None:
        args.artifact = checked_later("--artifact", artifact_folder, DEFAULT_ARTIFACT)
    if args.out.suffix.lower() not in (".html", ".htm"):
        raise FlagError("--out", f"{args.out}: the report is HTML; give a file name ending in .html")
    _refuse_a_report_inside_the_artifact(args.out, Path(args.artifact))
    try:  # before the report is computed, not after
        args.out.parent.mkdir(parents=True, exist_ok=True)
        probe = args.out.parent / f".{args.out.name}.writable"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise FlagError("--out", f"{args.out}: cannot write there ({error.strerror or error})") from None
    with stage_lines("report", not (args.json or args.no_progress)) as stage:
        written = write_report(args.artifact, args.out, data_path=args.data, progress=stage)
    if args.json:
        emit_json(written.document)
        return 0
    stdout_console.print(
        Text.assemble(
            "report written to ",
            (str(written.html_path), "bold"),
            f" ({written.seconds:.1f} s)\nits numbers: {written.json_path}",
        )
    )
    return 0


def add_compare_command(sub: Subcommands) -> None:
    c = add_command(
        sub,
        "compare",
        "compare the engine's models with popularity and raw library defaults on one split",
        COMPARE_EXAMPLES,
        cmd_compare,
    )
    c.add_argument(
        "--config", type=existing_file, required=True, help="training config (TOML): data, split, models"
    )
    c.add_argument("--data", type=existing_folder, help="data folder; overrides [data] path of the config")
    c.add_argument(
        "--catalog",
        type=catalog_spec,
        help="persona catalog (bundled name or TOML file); overrides [personas] catalog",
    )
    c.add_argument("--output", type=Path, help="also write the JSON report to this file")
    c.add_argument(
        "--trials",
        type=non_negative_int,
        default=10,
        help="hyperparameter search budget: trials per engine and raw library model, all on one "
        "validation split carved from the training events (0: no search, config values; default 10)",
    )
    c.add_argument(
        "--search-seed",
        type=non_negative_int,
        default=0,
        help="seed of the hyperparameter search (default 0)",
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_compare(args: argparse.Namespace) -> int:
    import dataclasses

    from training.compare_job import print_comparison, run_comparison
    from training.config import TrainConfig, load_config

    show_progress = not (args.json or args.no_progress)
    config: Path | TrainConfig = args.config
    if args.catalog is not None:
        loaded = load_config(args.config)
        config = dataclasses.replace(
            loaded, personas=dataclasses.replace(loaded.personas, catalog=args.catalog)
        )
    report = run_comparison(
        config,
        data_path=args.data,
        show_progress=show_progress,
        trials=args.trials,
        search_seed=args.search_seed,
    )
    if args.output:
        args.output.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if args.json:
        emit_json(report.to_dict())
    else:
        print_comparison(report)
    return 0


def add_tune_command(sub: Subcommands) -> None:
    tu = add_command(
        sub,
        "tune",
        "time-boxed random search of the engine's model hyperparameters on a validation split",
        TUNE_EXAMPLES,
        cmd_tune,
    )
    tu.add_argument(
        "--config", type=existing_file, required=True, help="training config (TOML) to start from"
    )
    tu.add_argument("--data", type=existing_folder, help="data folder; overrides [data] path of the config")
    tu.add_argument(
        "--budget-seconds", type=positive_float, required=True, help="wall-clock budget of the search"
    )
    tu.add_argument("--models", help="comma-separated model kinds to tune (default: every tunable one)")
    tu.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random search (default 0)")
    tu.add_argument(
        "--write-config", type=Path, help="where to write the tuned config (default: CONFIG with -tuned)"
    )
    tu.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the tuned config's file if it exists (without it, tune refuses before searching)",
    )
    tu.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_tune(args: argparse.Namespace) -> int:
    from training.tune_job import print_tuning, run_tuning

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    result = run_tuning(
        args.config,
        budget_seconds=args.budget_seconds,
        data_path=args.data,
        models=models,
        seed=args.seed,
        write_config=args.write_config,
        overwrite=args.overwrite,
        show_progress=not (args.json or args.no_progress),
    )
    if args.json:
        emit_json(result.to_dict())
    else:
        print_tuning(result)
    return 0
