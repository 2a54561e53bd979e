"""The ``kdclaims`` command: list, validate, schema, show, run, tune, report, plan, train.

Exit codes: 0 success; 1 validation problems (``validate``), or with ``run --strict`` a verdict other than
supported; 2 usage errors, missing data/weights, or a crash.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

DEFAULT_CLAIMS = Path("claims")
DEFAULT_RUN = ("accuracy-gain", "cpu")  # the main job: Table 1's claim on Fashion-MNIST


def _claims_dir(p: str | None) -> Path:
    if p:
        return Path(p)
    if DEFAULT_CLAIMS.is_dir():
        return DEFAULT_CLAIMS
    return Path(__file__).resolve().parent.parent / "claims"


def cmd_validate(args: argparse.Namespace) -> int:
    from kdclaims.spec.loader import load_claims

    paths = args.paths or [_claims_dir(None)]
    files, errors = load_claims(paths)
    for e in errors:
        print(e.format())
    n_items = sum(len(f.items) for f in files)
    print(f"{len(files)} claim file(s) valid ({n_items} items), {len(errors)} problem(s)", file=sys.stderr)
    return 1 if errors else 0


def claim_file_schema() -> dict[str, Any]:
    """JSON Schema of a claim *file*: the resolved claim's schema plus include/tiers/settings."""
    from kdclaims.spec.schema import Claim

    schema = Claim.model_json_schema()
    props = schema["properties"]
    for k in ("tier", "setting", "needs"):
        props.pop(k, None)
    override = {"type": "object", "description": "keys of the claim deep-merged over the base document"}
    props["include"] = {"description": "base file(s) merged under this one",
                        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    props["settings"] = {"type": "object", "additionalProperties": override,
                         "description": "teacher->student settings, one item each"}
    tier_override = {"type": "object", "properties": {"absent": {"type": "string"},
                                                     "needs": {"type": "array", "items": {"type": "string"}}}}
    props["tiers"] = {"type": "object", "properties": {t: tier_override for t in ("smoke", "cpu", "gpu")},
                      "additionalProperties": False}
    schema["required"] = [r for r in schema.get("required", []) if r not in ("tier", "setting")]
    schema["$id"] = "https://kdclaims.invalid/claim.schema.json"
    schema["title"] = "kdclaims claim file"
    return schema


def cmd_schema(args: argparse.Namespace) -> int:
    if args.report:
        from kdclaims.report.schema import report_json_schema

        print(json.dumps(report_json_schema(), indent=2))
    else:
        print(json.dumps(claim_file_schema(), indent=2))
    return 0


def _needs(item) -> str:
    c = item.claim
    if c is None:
        return f"absent: {item.absent}"
    needs = []
    if item.tier == "gpu" and c.needs is None or "cuda" in (c.needs or []):
        needs.append("CUDA")
    datas = {c.setup.data.name} | {t.data.name for t in c.setup.all_teachers().values() if t.data}
    if c.probe.data:
        datas.add(c.probe.data.name)
    needs.append("data: " + ", ".join(sorted(datas)))
    w = [t.weights for t in c.setup.all_teachers().values() if t.weights]
    if w:
        needs.append("weights: " + ", ".join(w))
    return "; ".join(needs)


def cmd_list(args: argparse.Namespace) -> int:
    from kdclaims.spec.loader import load_claims

    files, errors = load_claims([_claims_dir(args.path)])
    rows = []
    for f in files:
        for it in f.items:
            title = it.claim.title if it.claim else ""
            ref = f"§{it.claim.paper.section}" if it.claim else ""
            rows.append((f.claim_id, it.name, ref, title, _needs(it)))
    w0 = max([len(r[0]) for r in rows] + [5])
    w1 = max([len(r[1]) for r in rows] + [4])
    print(f"{'claim':{w0}s}  {'tier':{w1}s}  {'paper':7s}  needs")
    for r in rows:
        print(f"{r[0]:{w0}s}  {r[1]:{w1}s}  {r[2]:7s}  {r[4]}")
    print(f"\n{len(files)} claims, {len(rows)} items" + (f", {len(errors)} invalid file problem(s)" if errors else ""))
    for e in errors:
        print(e.format(), file=sys.stderr)
    return 1 if errors else 0


def _find(claim_id: str, path: str | None):
    from kdclaims.spec.loader import load_claims

    files, errors = load_claims([_claims_dir(path)])
    for f in files:
        if f.claim_id == claim_id:
            return f
    known = ", ".join(sorted(f.claim_id for f in files))
    raise SystemExit(f"kdclaims: no claim '{claim_id}'; claims: {known}")


def _pick(f, tier: str, setting: str | None):
    items = [i for i in f.items if i.tier == tier and (setting is None or i.setting == setting)]
    if not items:
        raise SystemExit(f"kdclaims: claim {f.claim_id} has no {tier} item; items: {[i.name for i in f.items]}")
    return items


def cmd_show(args: argparse.Namespace) -> int:
    import yaml

    f = _find(args.claim, args.path)
    for it in _pick(f, args.tier, args.setting):
        print(f"# {f.path} [{it.name}]")
        if it.claim is None:
            print(f"# absent: {it.absent}")
        else:
            print(yaml.safe_dump(it.claim.model_dump(mode="json"), sort_keys=False))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from kdclaims.bank import RunContext
    from kdclaims.plugin import format_outcome
    from kdclaims.report.collect import build_report, write_report
    from kdclaims.runner import Missing, report_item, run_claim
    from kdclaims.store import CheckpointStore

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.tier == "smoke" or args.threads:
        torch.set_num_threads(args.threads or 1)
    from kdclaims.atomic import writable_dir
    from kdclaims.errors import InputError
    from kdclaims.store import StoreError

    f = _find(args.claim, args.path)
    from kdclaims import fixture_store

    why = writable_dir(Path(args.kd_report).expanduser()) if args.kd_report else None
    if why:
        print(f"kdclaims: --kd-report: cannot write the report there ({why}); choose a writable DIR", file=sys.stderr)
        return 2
    try:
        store = CheckpointStore(Path(args.kd_cache or Path(".kdclaims/cache")).expanduser(),
                                fallbacks=fixture_store.fallbacks())
    except StoreError as e:
        print(f"kdclaims: {e}", file=sys.stderr)
        return 2
    device = torch.device(args.kd_device or ("cuda" if args.tier == "gpu" and torch.cuda.is_available() else "cpu"))
    ctx = RunContext(store=store, tier=args.tier, data_root=_p(args.kd_data), weights_dir=_p(args.kd_weights),
                     device=device, progress=not args.quiet)
    entries, worst = [], 0
    for it in _pick(f, args.tier, args.setting):
        name = f"{f.claim_id}[{it.name}]"
        if it.claim is None:
            print(f"{name}: tier absent: {it.absent}")
            continue
        try:
            result = run_claim(it.claim, ctx)
        except Missing as e:
            print(f"{name}: cannot run here, needs: {e}", file=sys.stderr)
            return 2
        except (InputError, StoreError) as e:  # unusable weights, data or cache: the message names the file
            print(f"{name}: {e}", file=sys.stderr)
            return 2
        print(f"\n{name}: {it.claim.title}\n{format_outcome(result)}\nverdict: {result.outcome.verdict_text.upper()}")
        trained = sum(e["source"] == "trained" for e in result.events)
        print(f"({len(result.events)} models: {trained} trained, {len(result.events) - trained} from cache or files; "
              f"{result.seconds:.1f}s)")
        worst = max(worst, 0 if result.verdict == "supported" else 1)
        entries.append(report_item(it.claim, nodeid=f"{f.path}::{name}", outcome="passed" if result.verdict ==
                                   "supported" else "failed", verdict=result.verdict, result=result,
                                   seconds=result.seconds))
    if args.kd_report and entries:
        try:
            paths = write_report(build_report(entries, command=" ".join(sys.argv)), Path(args.kd_report))
        except OSError as e:
            print(f"kdclaims: the report could not be written to {args.kd_report}: {e}", file=sys.stderr)
            return 2
        print("report: " + ", ".join(map(str, paths)))
    return worst if args.strict else 0


DEFAULT_STAGING = "accuracy-gain"  # its cpu and smoke items add nothing to the tiers' default staging


def cmd_tune(args: argparse.Namespace) -> int:
    """Choose distillation weights on validation images and write them, with provenance, for the claims to read."""
    import torch

    from kdclaims.bank import RunContext
    from kdclaims.store import CheckpointStore
    from kdclaims.tune import load_grid, tune, tuned_document, write_tuned

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    f = _find(DEFAULT_STAGING if args.claim == "default" else args.claim, args.path)
    items = [i for i in _pick(f, args.tier, args.setting) if i.claim is not None]
    if len(items) != 1:
        raise SystemExit(f"kdclaims: tune one item at a time; {f.claim_id} has {[i.name for i in items]} at tier "
                         f"{args.tier}: pick one with --setting")
    claim = items[0].claim
    if not 0 < args.validation < 1:
        print(f"kdclaims: --validation must be between 0 and 1, got {args.validation}", file=sys.stderr)
        return 2
    try:
        grid = load_grid(_p(args.grid))
    except (OSError, ValueError) as e:
        print(f"kdclaims: {e}", file=sys.stderr)
        return 2
    store = CheckpointStore(Path(args.kd_cache or Path(".kdclaims/cache")).expanduser())
    ctx = RunContext(store=store, tier=args.tier, data_root=_p(args.kd_data), device=torch.device(args.kd_device or "cpu"),
                     progress=not args.quiet)
    seeds = claim.setup.seeds[: args.seeds] if args.seeds else claim.setup.seeds
    results, reference = tune(claim, ctx, grid, validation=args.validation, seeds=seeds)
    if not results:
        print(f"kdclaims: no arm of {f.claim_id}[{items[0].name}] has a method in the grid ({sorted(grid)})",
              file=sys.stderr)
        return 2
    name = f"tuned-{args.tier}.yaml" if args.claim == "default" else f"tuned-{args.tier}-{f.claim_id}.yaml"
    out = Path(args.out) if args.out else _claims_dir(args.path) / "_base" / name
    doc = tuned_document(claim, results, reference, command=" ".join(["kdclaims", *sys.argv[1:]]),
                         validation=args.validation, seeds=seeds)
    write_tuned(doc, out, "Included by _base/tiers.yaml." if args.claim == "default" else
                f"Include it from {f.path.name} to use it.")
    for r in results:
        print(f"{r.arm}: {r.chosen()} (validation accuracy {r.mean(r.best):.4f})")
    print(f"wrote {out}" + ("" if args.claim == "default" else f"; include it from {f.path} to use it"))
    return 0


def _p(v: str | None) -> Path | None:
    return Path(v).expanduser() if v else None


def cmd_report(args: argparse.Namespace) -> int:
    """Render one report.json, or merge several (validated first: nothing is written into ``--out`` unless
    every input and the merged report are valid). Exit 2, with one message and no traceback, on a problem."""
    from kdclaims.report.render import ReportError

    try:
        return _report(args)
    except ReportError as e:
        print(f"kdclaims: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"kdclaims: cannot write the report: {e.filename or args.out or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace) -> int:
    from kdclaims.report.collect import build_report, write_report
    from kdclaims.report.render import load_report, parse_report, render_all

    paths = []
    for source in args.source:
        src = Path(source)
        path = src / "report.json" if src.is_dir() else src
        if not path.is_file():
            print(f"kdclaims: no report.json at {path}", file=sys.stderr)
            return 2
        paths.append(path)
    if len(paths) == 1 and not args.tier:
        out = Path(args.out) if args.out else paths[0].parent
        for p in render_all(paths[0], out):
            print(p)
        return 0
    # several runs (or a tier filter): merge their items (a later file wins for the same node id), Holm again
    if not args.out:
        print("kdclaims: merging reports needs --out DIR", file=sys.stderr)
        return 2
    items: dict[str, dict] = {}
    commands = []
    for path in paths:
        load_report(path)  # validated: names the file and field of a problem
        data = json.loads(path.read_text(encoding="utf-8"))
        commands.append(data.get("command", ""))
        for it in data.get("items", []):
            if not args.tier or it.get("tier") in args.tier:
                items[it["nodeid"]] = it
    report = build_report(list(items.values()), command=" + ".join(c for c in commands if c))
    parse_report(report, f"merged report for {args.out}")  # valid before anything is written
    for p in write_report(report, Path(args.out)):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdclaims", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("validate", help="check claim files; one 'file:line: field: message' per problem")
    s.add_argument("paths", nargs="*", help="claim files or folders (default: claims/)")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON Schema of a claim file (or of report.json)")
    s.add_argument("--report", action="store_true", help="the schema of report.json instead")
    s.set_defaults(fn=cmd_schema)

    s = sub.add_parser("list", help="claims x tiers, with what each tier needs")
    s.add_argument("path", nargs="?", help="claims folder (default: claims/)")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("show", help="the resolved spec of a claim (includes and tier overrides applied)")
    s.add_argument("claim")
    s.add_argument("--tier", default="cpu", choices=("smoke", "cpu", "gpu"))
    s.add_argument("--setting")
    s.add_argument("--path", help="claims folder")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("run", help="verify one claim end to end outside pytest and print the verdict")
    s.add_argument("claim", nargs="?", default=DEFAULT_RUN[0])
    s.add_argument("--tier", default=DEFAULT_RUN[1], choices=("smoke", "cpu", "gpu"))
    s.add_argument("--setting")
    s.add_argument("--path", help="claims folder")
    s.add_argument("--kd-data", metavar="ROOT")
    s.add_argument("--kd-weights", metavar="DIR")
    s.add_argument("--kd-cache", metavar="DIR")
    s.add_argument("--kd-report", metavar="DIR")
    s.add_argument("--kd-device", metavar="DEV")
    s.add_argument("--strict", action="store_true", help="exit 1 unless every verdict is 'supported'")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 at the smoke tier)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("tune", help="choose distillation weights on validation images (never probes or test "
                                    "images) and write them with provenance to claims/_base/tuned-TIER*.yaml")
    s.add_argument("claim", help="a claim id, or 'default' for the tier's default staging")
    s.add_argument("--tier", default="cpu", choices=("smoke", "cpu"))
    s.add_argument("--setting")
    s.add_argument("--path", help="claims folder")
    s.add_argument("--grid", metavar="YAML", help="method -> list of parameter mappings (default: kdclaims.tune)")
    s.add_argument("--validation", type=float, default=0.1,
                   help="share of the training images held out when the recipe holds none (default 0.1)")
    s.add_argument("--seeds", type=int, help="use the item's first N seeds (default: all)")
    s.add_argument("--out", metavar="FILE", help="default: <claims>/_base/tuned-TIER.yaml for 'default', "
                                                 "<claims>/_base/tuned-TIER-CLAIM.yaml for a claim")
    s.add_argument("--kd-data", metavar="ROOT")
    s.add_argument("--kd-cache", metavar="DIR")
    s.add_argument("--kd-device", metavar="DEV")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    s.set_defaults(fn=cmd_tune)

    s = sub.add_parser("report", help="re-render report.md/report.html from report.json without re-running; "
                                      "several reports (or --tier) are merged into one")
    s.add_argument("source", nargs="+", help="report.json files or the folders holding them")
    s.add_argument("--out", help="output folder (default: beside report.json; required when merging)")
    s.add_argument("--tier", nargs="+", choices=("smoke", "cpu", "gpu"), help="keep only these tiers")
    s.set_defaults(fn=cmd_report)

    from kdclaims.plancmd import add_commands

    add_commands(sub)  # plan, train
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
