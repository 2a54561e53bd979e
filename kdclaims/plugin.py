"""The pytest plugin: claim YAML files become test items (one per claim x tier x setting).

Hooks are thin; the work is in ``kdclaims.spec.loader`` (collection), ``kdclaims.runner`` (running) and
``kdclaims.report`` (the report). Shared state lives on a ``KDState`` in ``config.stash``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from kdclaims.spec.loader import ClaimItem as SpecItem
from kdclaims.spec.loader import is_claim_file, load_claim_file
from kdclaims.spec.schema import TIERS
from kdclaims.spec.yamlsource import SpecErrors

log = logging.getLogger("kdclaims")
REPORT_PROP = "kdclaims_report"


class KDState:
    """Options and shared objects of one pytest run (the checkpoint store, collected report items)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        opt = config.getoption
        self.data_root = _path(opt("kd_data"))
        self.weights_dir = _path(opt("kd_weights"))
        cache = opt("kd_cache") or os.environ.get("KDCLAIMS_CACHE") or str(Path(config.rootpath) / ".kdclaims" / "cache")
        self.cache_dir = Path(cache).expanduser()
        report = opt("kd_report")
        if report:
            self.report_dir: Path | None = Path(report).expanduser()
        elif getattr(config, "cache", None) is not None:
            self.report_dir = Path(config.cache.mkdir("kdclaims-report"))
        else:
            self.report_dir = Path(config.rootpath) / ".kdclaims" / "report"
        self.device = opt("kd_device")
        self.recipe = opt("kd_recipe")
        self.allow_inconclusive = opt("kd_allow_inconclusive")
        self.progress = opt("kd_progress")
        self.items: dict[str, dict[str, Any]] = {}
        self.jobs = opt("kd_jobs")
        self.pretrained = None  # kdclaims.pretrain.Pretrained, once the plan ran
        self._store = None
        self.started = time.time()

    @property
    def store(self):
        if self._store is None:
            from kdclaims import fixture_store
            from kdclaims.store import CheckpointStore

            self._store = CheckpointStore(self.cache_dir, fallbacks=fixture_store.fallbacks())
        return self._store

    def context(self, tier: str):
        import torch

        from kdclaims.bank import RunContext

        dev = worker_device(self.device or ("cuda" if tier == "gpu" and torch.cuda.is_available() else "cpu"))
        return RunContext(store=self.store, tier=tier, data_root=self.data_root, weights_dir=self.weights_dir,
                          device=torch.device(dev), progress=self.progress, recipe_mode=self.recipe)


def worker_device(dev: str) -> str:
    """``cuda`` on xdist worker ``gwN`` with several GPUs: ``cuda:{N mod count}`` (made the current device), so
    ``-n <number of GPUs>`` gives every worker its own GPU. An explicit index (``cuda:1``), a single GPU, the CPU
    or a run without xdist keep ``dev`` as it is."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if dev != "cuda" or not worker.startswith("gw") or not worker[2:].isdigit():
        return dev
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return dev
    index = int(worker[2:]) % count
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def _path(v: str | None) -> Path | None:
    return Path(v).expanduser() if v else None


STATE = pytest.StashKey[KDState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("kdclaims", "verify knowledge-distillation claims")
    g.addoption("--kd-data", metavar="ROOT", help="root folder of datasets (imagenet/, model-vs-human/, fairface/, ...)")
    g.addoption("--kd-weights", metavar="DIR", help="folder of teacher weight files (torchvision's file names)")
    g.addoption("--kd-cache", metavar="DIR", help="checkpoint store (default .kdclaims/cache or $KDCLAIMS_CACHE)")
    g.addoption("--kd-report", metavar="DIR", help="write report.json, report.md, report.html here")
    g.addoption("--kd-device", metavar="DEV", help="torch device (default: cuda for the gpu tier, cpu otherwise)")
    g.addoption("--kd-recipe", choices=("paper", "fast"), default="paper", help="training recipe of the gpu tier")
    g.addoption("--kd-allow-inconclusive", action="store_true", help="an inconclusive verdict passes (reported)")
    g.addoption("--kd-progress", action="store_true", help="show training progress bars")
    g.addoption("--kd-jobs", type=int, metavar="N", help="without xdist: train the selection's missing models "
                "in N processes before the items run (default 1; under -n the xdist workers share them)")


def _explicit_dist(config: pytest.Config) -> bool:
    """Whether the user chose xdist's distribution mode (``--dist``/``-d``, on the command line or in addopts)."""
    import shlex

    args = [str(a) for a in config.invocation_params.args]
    args += shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    args += [str(a) for a in config.getini("addopts")]
    return any(a == "-d" or a == "--distload" or a.startswith("--dist") for a in args)


def pytest_cmdline_main(config: pytest.Config) -> None:
    """With ``-n N`` and no ``--dist``, distribute by ``loadgroup``: items that share a teacher (one xdist group)
    run on one worker, so a teacher is trained once and the other worker is not left waiting on its lock.

    Workers parse the command line without xdist's defaults; the controller tells them (``workerinput``) to name
    items ``<id>@<group>`` as ``--dist loadgroup`` would."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        if worker.get(_LOADGROUP):
            config.option.loadgroup = True
    elif getattr(config.option, "dist", None) == "load" and not _explicit_dist(config):
        config.option.dist = "loadgroup"


_LOADGROUP = "kdclaims_loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """(xdist) Pass the controller's loadgroup choice to each worker."""
    node.workerinput[_LOADGROUP] = node.config.getoption("dist", None) == "loadgroup"


def pytest_configure(config: pytest.Config) -> None:
    for tier, text in (("smoke", "whole pipeline on tiny fixtures, CPU, seconds"),
                       ("cpu", "claims on small real data (Fashion-MNIST, digits), CPU, minutes"),
                       ("gpu", "the paper's own settings on CUDA")):
        config.addinivalue_line("markers", f"{tier}: {text}")
    config.addinivalue_line("markers", "claim(id): a claim item of kdclaims")
    config.addinivalue_line("markers", "xdist_group(name): run items of one group on one xdist worker")
    config.stash[STATE] = KDState(config)
    if not _is_xdist_worker(config):
        if config.getoption("kd_report"):
            from kdclaims.atomic import writable_dir

            why = writable_dir(config.stash[STATE].report_dir)
            if why:
                raise pytest.UsageError(f"--kd-report: cannot write the report there ({why}); choose a writable DIR")
        config.pluginmanager.register(ReportCollector(config), f"kdclaims-report-{id(config)}")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtestloop(session: pytest.Session):
    """Train the selection's missing models (the plan, ``kdclaims.pretrain``) before any item runs."""
    config = session.config
    skip = config.option.collectonly or (session.testsfailed and not config.option.continue_on_collection_errors)
    specs = [i.spec for i in session.items if isinstance(i, ClaimTestItem)]
    if specs and not skip:
        from kdclaims.executors.worker import job_from_context
        from kdclaims.pretrain import pretrain

        state: KDState = config.stash[STATE]
        try:
            state.pretrained = pretrain(specs, state.context, state.jobs, job_from_context)
        except Exception as e:  # noqa: BLE001 - e.g. an unusable --kd-cache: every item reports it itself
            log.warning("kdclaims: no models trained before the items: %s: %s", type(e).__name__, e)
    yield


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if is_claim_file(file_path) and "claims" in file_path.parts[:-1]:
        return ClaimFile.from_parent(parent, path=file_path)
    return None


class ClaimSpecError(Exception):
    pass


class ClaimFile(pytest.File):
    def collect(self):
        try:
            cf = load_claim_file(self.path)
        except SpecErrors as e:
            raise self.CollectError(_rel_errors(e, self.config)) from None
        for spec_item in cf.items:
            yield ClaimTestItem.from_parent(self, name=f"{cf.claim_id}[{spec_item.name}]", spec=spec_item)


def _rel_errors(e: SpecErrors, config: pytest.Config) -> str:
    lines = []
    for err in e.errors:
        try:
            err.file = str(Path(err.file).resolve().relative_to(Path(config.rootpath).resolve()))
        except ValueError:
            pass
        lines.append(err.format())
    return "\n".join(lines)


class ClaimTestItem(pytest.Item):
    def __init__(self, *, spec: SpecItem, **kw):
        super().__init__(**kw)
        self.spec = spec
        self.add_marker(getattr(pytest.mark, spec.tier))
        self.add_marker(pytest.mark.claim(spec.claim_id))
        if spec.claim is not None:
            for tag in spec.claim.tags:
                self.keywords[tag] = True
            if spec.tier != "smoke":  # smoke teachers train in about a second: spreading their items wins
                self.add_marker(pytest.mark.xdist_group(_group(spec)))

    def reportinfo(self):
        return self.path, self.spec.line - 1, f"claim {self.name}"

    def runtest(self) -> None:
        state: KDState = self.config.stash[STATE]
        spec = self.spec
        t0 = time.time()
        if spec.claim is None:
            self._record(state, "skipped", "skipped", f"{spec.tier} tier absent: {spec.absent}", None, t0)
            pytest.skip(f"{spec.tier} tier absent for {spec.claim_id}: {spec.absent}")
        from kdclaims.runner import Missing, run_claim

        claim = spec.claim
        try:
            with _threads(1 if spec.tier == "smoke" else None):
                result = run_claim(claim, state.context(spec.tier))
            if state.pretrained is not None:
                from kdclaims.pretrain import mark_pretrained

                mark_pretrained(result.events, state.pretrained.trained)
        except Missing as e:
            if spec.tier == "smoke":
                self._record(state, "failed", "error", f"smoke fixtures missing: {e}", None, t0)
                raise
            self._record(state, "skipped", "skipped", f"needs: {e}", None, t0)
            pytest.skip(f"{claim.id}[{spec.name}] needs: {e}")
        except Exception as e:  # noqa: BLE001 - record the crash in the report, then let pytest show it
            self._record(state, "failed", "error", f"{type(e).__name__}: {e}", None, t0)
            raise
        self._report_result(state, result, t0)

    def _report_result(self, state: KDState, result, t0: float) -> None:
        spec, claim = self.spec, self.spec.claim
        verdict = result.verdict
        for e in result.outcome.expectations:
            self.user_properties.append((f"{e.label}", f"{verdict}: {e.measured:.4g} [{e.ci_low:.4g}, {e.ci_high:.4g}] p={e.p_value:.3g}"))
        problems = result.problems()
        table = format_outcome(result)
        if problems:
            self._record(state, "failed", "error", "malformed statistics: " + "; ".join(problems), result, t0)
            pytest.fail(f"{claim.id}[{spec.name}]: malformed statistics\n" + "\n".join(problems) + "\n" + table,
                        pytrace=False)
        if spec.tier == "smoke":
            planted = [e for e in result.outcome.expectations if e.smoke_asserts and e.verdict != "supported"]
            if planted:
                self._record(state, "failed", verdict, "planted effect not found", result, t0)
                pytest.fail(f"{claim.id}[smoke]: the fixture plants this effect but it was not found\n{table}",
                            pytrace=False)
            self._record(state, "passed", verdict, "", result, t0)
            return
        if verdict == "supported" or (verdict == "inconclusive" and state.allow_inconclusive):
            self._record(state, "passed", verdict, "", result, t0)
            return
        self._record(state, "failed", verdict, f"claim {result.outcome.verdict_text}", result, t0)
        pytest.fail(f"{claim.id}[{spec.name}]: {result.outcome.verdict_text.upper()}\n{table}", pytrace=False)

    def _record(self, state: KDState, outcome: str, verdict: str, message: str, result, t0: float) -> None:
        from kdclaims.runner import report_item

        claim = self.spec.claim
        if claim is None:
            entry = {"nodeid": self.nodeid, "id": self.spec.claim_id, "title": self.spec.claim_id, "setting": None,
                     "tier": self.spec.tier, "recipe": None, "outcome": outcome, "verdict": verdict,
                     "message": message, "paper_ref": {"section": "", "figure": None, "table": None},
                     "statement": "", "setup": {}, "statistic": "", "metric": None, "measured": None,
                     "ci_low": None, "ci_high": None, "p_value": None, "p_holm": None, "paper": None,
                     "n_images": None, "n_seeds": None, "seconds": 0.0, "expectations": [], "arms": {},
                     "figure": {"kind": "none", "metrics": [], "x": None, "xlabel": None, "ylabel": None},
                     "extras": {}}
        else:
            entry = report_item(claim, nodeid=self.nodeid, outcome=outcome, verdict=verdict, message=message,
                                result=result, seconds=time.time() - t0,
                                recipe=state.recipe if self.spec.tier == "gpu" else None)
        self.user_properties.append((REPORT_PROP, json.dumps(entry, default=_json_default)))

    def repr_failure(self, excinfo, style=None):
        from kdclaims.runner import Missing

        if isinstance(excinfo.value, Missing):
            return f"{self.name}: smoke fixture missing: {excinfo.value}"
        if isinstance(excinfo.value, (pytest.fail.Exception, pytest.skip.Exception)):
            return super().repr_failure(excinfo, style=style)
        from kdclaims.errors import InputError
        from kdclaims.store import StoreError

        if isinstance(excinfo.value, (InputError, StoreError)):  # the message names the file and the problem
            return f"{self.name}: {excinfo.value}"
        # the last frames inside kdclaims (and below), not pytest's own machinery
        tb = traceback.format_exception(excinfo.value, limit=-10)
        return f"{self.name}: {type(excinfo.value).__name__} while running the claim\n" + "".join(tb)


class _threads:
    """Temporarily set torch's intra-op threads (tiny smoke models run fastest on one thread: with two,
    OpenMP's spin-waiting made a 5k-parameter CNN 20x slower on a busy 2-core machine)."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n:
            import torch

            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.old:
            import torch

            torch.set_num_threads(self.old)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _group(spec: SpecItem) -> str:
    """Items sharing a main teacher recipe share an xdist group (``--dist loadgroup``)."""
    from kdclaims.store import recipe_key

    c = spec.claim
    t = c.setup.teacher
    key = {"arch": t.arch, "weights": t.weights, "params": t.params,
           "data": (t.data or c.setup.data).key(), "recipe": (t.recipe or c.setup.recipe).key(), "tier": c.tier}
    return f"teacher-{recipe_key(key)[:10]}"


def format_outcome(result) -> str:
    """One line per expectation (premises first, marked): the deciding answer, the family-level α it used, its
    minimum detectable effect, the image-level answer ("these checkpoints"); then the family and verdict."""
    out = result.outcome
    rows = [f"  {'expectation':40s} {'measured':>10s} {'CI (decides)':>22s} {'p':>8s} {'alpha':>7s} {'MDE':>7s} "
            f"{'paper':>8s}  verdict  [these checkpoints: CI]"]
    for e in sorted(out.expectations, key=lambda e: not e.premise):
        paper = "" if e.paper is None else f"{e.paper:.4g}"
        mde = "" if e.mde is None else f"{e.mde:.3g}"
        img = e.image_level or {}
        label = ("premise: " if e.premise else "") + e.label
        by = {"seeds": "seeds", "images": "images", "none": "1 seed"}.get(e.decided_by, e.decided_by)
        rows.append(f"  {label[:40]:40s} {e.measured:10.4g} [{e.ci_low:9.4g}, {e.ci_high:9.4g}] "
                    f"{e.p_value:8.3g} {e.alpha:7.3g} {mde:>7s} {paper:>8s}  {e.verdict} ({by})"
                    + (f"  [{img['ci_low']:.4g}, {img['ci_high']:.4g}]" if img and e.decided_by != "images" else ""))
    fam = out.family
    if fam:
        rows.append(f"  family: {fam['name'] or 'none (judged alone)'}, size {fam['size']}, level {fam['alpha']:.3g}"
                    f"; verdict: {out.verdict_text}")
    return "\n".join(rows)


# -- the report (controller process only) --------------------------------------------------------------
def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class ReportCollector:
    """Registered per config: gathers each item's report entry (also from xdist workers) and rewrites
    report.json atomically after every item, so a crash or a kill loses nothing already measured."""

    def __init__(self, config: pytest.Config):
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict((k, v) for k, v in getattr(report, "user_properties", []) if k == REPORT_PROP)
        if not props:
            return
        state: KDState = self.config.stash[STATE]
        entry = json.loads(props[REPORT_PROP])
        state.items[entry["nodeid"]] = entry
        _write_report(state, final=False)


def _write_report(state: KDState, final: bool) -> dict[str, Any] | None:
    from kdclaims.report.collect import build_report, write_report

    if not state.items or state.report_dir is None:
        return None
    report = build_report(list(state.items.values()), command=" ".join(["pytest", *state.config.invocation_params.args]))
    try:
        write_report(report, state.report_dir, render=final)
        state.report_error = None
    except Exception as e:  # noqa: BLE001 - the run's results stand; the failure is reported loudly at the end
        state.report_error = f"{type(e).__name__}: {e}"
        log.error("cannot write the report to %s: %s", state.report_dir, state.report_error)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_xdist_worker(session.config):
        return
    state = session.config.stash.get(STATE, None)
    if state is not None:
        state.final_report = _write_report(state, final=True)
        if getattr(state, "report_error", None) and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a lost report is never a silent success


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    pre = state.pretrained if state else None
    if pre is not None and pre.planned:
        terminalreporter.write_line(f"kdclaims plan: {pre.planned} models needed, {len(pre.trained)} trained before "
                                    f"the items in {pre.seconds:.1f}s" + (f", {len(pre.failed)} failed (left to "
                                                                          "their items)" if pre.failed else ""))
    report = getattr(state, "final_report", None) if state else None
    if not report:
        return
    from kdclaims.report.terminal import render_terminal

    terminalreporter.section("kdclaims verdicts")
    terminalreporter.write_line(render_terminal(report))
    if getattr(state, "report_error", None):
        terminalreporter.write_line(f"report NOT written to {state.report_dir}: {state.report_error}", red=True,
                                    bold=True)
    else:
        terminalreporter.write_line(f"report: {state.report_dir / 'report.json'} (+ report.md, report.html)")
