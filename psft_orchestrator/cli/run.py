"""`psft-run SPEC`: plan and run a pipeline.

Exit status: 0 success, 1 a stage failed, 2 invalid input or usage (nothing was written).
Heavy libraries (torch, ray, prefect) are imported only inside the commands that need them,
so `psft-run --help` and `--plan` answer quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from psft_orchestrator.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, workspace_arg


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="psft-run",
        description="Plan and run a post-training pipeline spec (filter → SFT/PSFT → GRPO/DPO → eval).",
        epilog="Examples:\n  psft-run specs/demo.yaml\n  psft-run specs/math_psft.yaml --plan\n"
        "  psft-run status --workspace results   (the current or last run, from another terminal)\n"
        "  psft-run specs/math_psft.yaml --profile toy --set train.max_steps=20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="pipeline spec (YAML)")
    workspace_arg(p)
    p.add_argument(
        "--plan", action="store_true", help="print the expanded plan with cache status; run nothing"
    )
    p.add_argument("--json", action="store_true", help="with --plan: print JSON")
    p.add_argument(
        "--explain",
        metavar="NODE",
        help="with --plan: what NODE's fingerprint is made of and, if it is not cached, how it "
        "differs from the closest cached node of its stage",
    )
    p.add_argument("--profile", help="apply a profile from the spec's profiles: (e.g. toy)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field: STAGE.FIELD=VALUE or a top-level key such as defaults.seed=2 (repeatable)",
    )
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="NODE",
        help="rerun this node (id, stage name or fingerprint prefix) and everything downstream; "
        "with --plan, show what it would rerun",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="fail at once if another run holds the workspace"
    )
    p.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="join this Ray cluster (default: $RAY_ADDRESS, else start a local one)",
    )
    p.add_argument(
        "--no-prefect",
        action="store_true",
        help="run without Prefect tracking (plain local executor)",
    )
    p.add_argument(
        "--max-parallel",
        type=int,
        metavar="N",
        help="run at most N nodes at once (default: the spec's max_parallel:, else the CPUs available)",
    )
    shared = p.add_mutually_exclusive_group()
    shared.add_argument(
        "--store",
        metavar="DIR",
        help="the store shared across workspaces (default: $PSFT_STORE, else "
        "~/.cache/psft-orchestrator/store; PSFT_STORE=off switches it off)",
    )
    shared.add_argument(
        "--no-store",
        action="store_true",
        help="neither reuse nor publish nodes through the shared store (as the spec's store: false)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final summary")
    return p


def status_main(argv: list[str]) -> int:
    """`psft-run status [--workspace W]`: the current or last run, from another terminal."""
    p = argparse.ArgumentParser(
        prog="psft-run status",
        description="Show the current or last run of a workspace: each node's state, progress, "
        "ETA, and the log of each failure.",
    )
    workspace_arg(p)
    args = p.parse_args(argv)
    from psft_orchestrator.run.status import load_status, render_status

    ws = Path(args.workspace or "results")
    status = load_status(ws)
    if status is None:
        print(f"no run found in {ws} (no {ws / 'status.json'} or run record)", file=sys.stderr)
        return EXIT_USAGE
    print(render_status(status))
    return EXIT_OK


def _shared_store(args: argparse.Namespace, plan: Any) -> Any:
    """The shared store this run uses, or None (--no-store, the spec's store: false,
    PSFT_STORE=off); a --store that cannot be used is refused (exit 2) before anything runs."""
    from psft_orchestrator.run.shared_store import SharedStore, check_root, default_root

    root = Path(args.store) if args.store else default_root()
    if args.no_store or not plan.pipeline.store or root is None:
        return None
    check_root(root, "--store" if args.store else "$PSFT_STORE / the default store")
    return SharedStore(root)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"] and not os.path.exists("status"):
        return status_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_parallel is not None and args.max_parallel < 1:
        parser.error("--max-parallel must be at least 1")
    from psft_orchestrator.spec.errors import SpecError

    try:
        from psft_orchestrator.plan.planner import build_plan

        plan = build_plan(args.spec, args.workspace, args.profile, args.overrides)
        from psft_orchestrator.plan.backend_checks import check_backends

        check_backends(plan)
        from psft_orchestrator.run.inputs import check_prepared

        check_prepared(plan)
        forced = plan.forced(args.force)
        if args.explain:  # implies --plan: never runs anything
            from psft_orchestrator.plan.explain import explain

            print(explain(plan, plan.find(args.explain)))
            return EXIT_OK
        from psft_orchestrator.run.workspace import check_workspace

        check_workspace(plan.workspace, open_index=not args.plan)
        shared = _shared_store(args, plan)
        if args.plan:
            from psft_orchestrator.plan.render import plan_json, plan_text

            print(plan_json(plan, forced) if args.json else plan_text(plan, forced))
            from psft_orchestrator.results.coverage import table_notes

            notes = table_notes(plan)  # tables the spec names but cannot fill, and why
            if notes:
                print("\n".join(["", "note: tables:", *(f"  {n}" for n in notes)]), file=sys.stderr)
            return EXIT_OK
        from psft_orchestrator.run.execute import run_plan

        ok = run_plan(
            plan,
            force=args.force,
            wait=not args.no_wait,
            ray_address=args.ray_address,
            use_prefect=not args.no_prefect,
            quiet=args.quiet,
            max_parallel=args.max_parallel,
            shared=shared,
        )
        return EXIT_OK if ok else EXIT_FAILED
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
