"""The kdclaims command: validate, list, schema, show, report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from claimkit import TINY_CLAIM, write_claim
from kdclaims.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_validate_good_and_broken(tmp_path, capsys):
    d = tmp_path / "claims"
    write_claim(d, "good.yaml", claim_id="good")
    bad = [("b1.yaml", "id: b1\ntitle: [x\n"),
           ("b2.yaml", TINY_CLAIM.format(id="b2").replace('"kl > independent"', '"distiled > independent"')),
           ("b3.yaml", TINY_CLAIM.format(id="b3").replace("name: accuracy", "name: acc")),
           ("b4.yaml", TINY_CLAIM.format(id="b4").replace("seeds: [0]", "seeds: [0, 0]")),
           ("z5.yaml", TINY_CLAIM.format(id="good"))]  # a duplicate id
    for name, text in bad:
        write_claim(d, name, text=text)
    assert main(["validate", str(d)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == len(bad), out
    for (name, _), line in zip(sorted(bad), sorted(out)):
        assert line.startswith(str(d / name) + ":"), line
    assert main(["validate", str(d / "good.yaml")]) == 0


def test_list_shows_every_shipped_claim_with_tiers(capsys):
    assert main(["list", str(ROOT / "claims")]) == 0
    out = capsys.readouterr().out
    assert "accuracy-gain" in out and "smoke" in out and "cpu" in out and "gpu-resnet50-resnet18" in out
    assert "CUDA; data: imagenet" in out


def test_schema_and_report_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "expect" in schema["properties"] and "tiers" in schema["properties"]
    assert main(["schema", "--report"]) == 0
    assert "items" in json.loads(capsys.readouterr().out)["properties"]


def test_show_resolves_tier_overrides(capsys):
    assert main(["show", "accuracy-gain", "--tier", "cpu", "--path", str(ROOT / "claims")]) == 0
    out = capsys.readouterr().out
    assert "fashion_mnist" in out and "mnist_net_small" in out and "tier: cpu" in out


def test_report_rerenders_from_json(tmp_path):
    src = ROOT / "tests" / "data" / "report_all_verdicts.json"
    shutil.copy(src, tmp_path / "report.json")
    assert main(["report", str(tmp_path)]) == 0
    first = (tmp_path / "report.html").read_bytes()
    assert (tmp_path / "report.md").is_file()
    assert main(["report", str(tmp_path / "report.json")]) == 0
    assert (tmp_path / "report.html").read_bytes() == first


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "kdclaims.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "validate" in r.stdout and "report" in r.stdout
