"""Store keys of recipes: identical trainings share a key, however their YAML spelled them."""

from __future__ import annotations

from pathlib import Path

import yaml

from kdclaims.recipe import Recipe
from kdclaims.spec.loader import find_claim_files, load_claim_file

CLAIMS = Path(__file__).resolve().parents[1] / "claims"


def test_settings_that_cannot_change_the_training_do_not_change_the_key():
    """A step schedule whose milestones all fall at or after the last epoch trains exactly like no schedule, and
    Adam ignores SGD's momentum. Fails without ``Recipe.key``'s canonical form (checked: the keys differed)."""
    plain = Recipe(epochs=4, optimizer="adam", lr=0.01)
    assert Recipe(epochs=4, optimizer="adam", lr=0.01, schedule="step", milestones=(30, 60)).key() == plain.key()
    assert Recipe(epochs=4, optimizer="adam", lr=0.01, momentum=0.5, nesterov=True).key() == plain.key()
    assert Recipe(epochs=4, optimizer="adam", lr=0.01, schedule="cosine", milestones=(2,), gamma=0.5).key() == \
        Recipe(epochs=4, optimizer="adam", lr=0.01, schedule="cosine").key()
    assert Recipe(epochs=4, optimizer="adam", lr=0.01, schedule="step", milestones=(3, 30)).key() != plain.key()
    assert Recipe(epochs=4, schedule="step", milestones=(3, 30)).key()["milestones"] == [3]
    assert Recipe(epochs=4, momentum=0.5).key() != Recipe(epochs=4).key()


def test_no_inert_step_schedule_leaks_into_the_cheap_tiers():
    """_base/imagenet.yaml's ``schedule: step, milestones: [30, 60]`` used to merge into the smoke and cpu recipes
    of every claim that includes it. Every resolved smoke/cpu recipe (students and teachers) now either has no step
    schedule or one with a milestone inside its epochs, and a claim that includes the ImageNet base has the tier's
    own student recipe. Fails without the explicit schedule in _base/tiers.yaml (checked: 30 recipes of 15 claims
    had an inert step schedule, and accuracy-gain's recipe was not the tier's)."""
    inert = []
    for path in find_claim_files([CLAIMS]):
        for item in load_claim_file(path).items:
            if item.claim is None or item.tier not in ("smoke", "cpu"):
                continue
            setup = item.claim.setup
            recipes = [setup.recipe] + [t.recipe for t in setup.all_teachers().values() if t.recipe is not None]
            inert += [f"{path.name}:{item.name}" for r in recipes if r.schedule == "step" and r.key()["schedule"] != "step"]
    assert inert == []

    tiers = yaml.safe_load((CLAIMS / "_base" / "tiers.yaml").read_text())["tiers"]
    items = {i.tier: i.claim for i in load_claim_file(CLAIMS / "accuracy" / "accuracy-gain.yaml").items}
    for tier in ("smoke", "cpu"):
        assert items[tier].setup.recipe == Recipe.model_validate(tiers[tier]["setup"]["recipe"]), tier
