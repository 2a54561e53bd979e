"""``kdclaims tune`` at smoke size: a tiny grid on synthetic data, chosen on validation images, read by claims."""

from __future__ import annotations

import pytest
import yaml

from kdclaims import cli
from kdclaims.bank import Bank, RunContext
from kdclaims.spec.loader import load_claim_file
from kdclaims.store import CheckpointStore
from kdclaims.tune import tune
from tests.claimkit import TINY_CLAIM, write_claim

GRID = {"kl": [{"tau": 2.0, "alpha": 0.9}, {"tau": 8.0, "alpha": 0.1}]}
CLAIM = TINY_CLAIM.replace("weight_decay: 0.0}}", "weight_decay: 0.0, max_steps: 3}}")


def _no_probe(*_a, **_k):
    raise AssertionError("tuning touched a probe or the test images")


def test_tune_picks_the_best_validation_accuracy_and_the_claims_read_it(tmp_path, monkeypatch):
    """Each grid point's KL student is scored on the held-out training images; the written file holds the point
    with the highest mean validation accuracy, its provenance (grid scores, date, commit), and a claim that includes
    the file gets those parameters. No probe and no test image is touched (both raise here).
    Fails if the choice ignores the scores (checked: with ``ArmResult.best`` returning 0 the written tau was 2.0
    while tau 8.0 scored higher) and if the claims do not read the file (the include check)."""
    from kdclaims.registries import PROBES

    monkeypatch.setattr(Bank, "eval_split", _no_probe)
    monkeypatch.setattr(PROBES, "get", _no_probe)
    claims = tmp_path / "claims"
    path = write_claim(claims, text=CLAIM.format(id="tiny-claim"))
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    cache = tmp_path / "cache"
    item = next(i for i in load_claim_file(path).items if i.tier == "smoke")
    results, reference = tune(item.claim, RunContext(store=CheckpointStore(cache), tier="smoke"), GRID,
                              validation=0.25)
    (kl,) = results
    means = [kl.mean(i) for i in range(2)]
    assert all(0 <= v <= 1 for v in means) and len(reference["independent"]) == 1
    best = GRID["kl"][means.index(max(means))]

    code = cli.main(["tune", "tiny-claim", "--tier", "smoke", "--path", str(claims), "--grid",
                     str(tmp_path / "grid.yaml"), "--validation", "0.25", "--kd-cache", str(cache), "--quiet"])
    assert code == 0
    tuned = claims / "_base" / "tuned-smoke-tiny-claim.yaml"
    doc = yaml.safe_load(tuned.read_text())
    kl_entry = next(m for m in doc["tiers"]["smoke"]["setup"]["methods"] if isinstance(m, dict) and m["name"] == "kl")
    assert kl_entry["params"] == {"gamma": 0.5, **best}
    note = doc["tiers"]["smoke"]["notes"]["tuned-kl"]
    assert "commit " in note and "no probe" in note and f"{max(means):.4f}" in note and "Grid:" in note

    reader = write_claim(claims, "reader.yaml", text=CLAIM.format(id="reader").replace(
        "tiers:\n", "include: [_base/tuned-smoke-tiny-claim.yaml]\ntiers:\n"))
    claim = next(i.claim for i in load_claim_file(reader).items if i.tier == "smoke")
    assert next(m for m in claim.setup.methods if m.name == "kl").params == {"gamma": 0.5, **best}
    assert claim.notes["tuned-kl"] == note


@pytest.mark.parametrize("argv, message", [
    (["--validation", "0"], "--validation must be between 0 and 1"),
    (["--grid", "GRID"], "a grid maps each method"),
])
def test_tune_refuses_bad_options_with_a_message(tmp_path, capsys, argv, message):
    claims = tmp_path / "claims"
    write_claim(claims, text=CLAIM.format(id="tiny-claim"))
    (tmp_path / "grid.yaml").write_text("kl: 3\n")
    argv = [a.replace("GRID", str(tmp_path / "grid.yaml")) for a in argv]
    assert cli.main(["tune", "tiny-claim", "--tier", "smoke", "--path", str(claims), *argv]) == 2
    assert message in capsys.readouterr().err
