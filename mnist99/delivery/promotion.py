"""The promotion gate: whether a newly registered version takes the ``champion`` alias or stays ``challenger``.

Pure decisions on plain values (no MLflow): :mod:`mnist99.tracking.aliases` reads the versions from the
registry, asks :func:`decide` and sets the alias under a lock. Versions are compared on validation
accuracy only, never on the test set, and only when both were validated on the same split: accuracies
measured on different images say nothing about which model is better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CHAMPION = "champion"  # the version to serve: models:/<name>@champion
CHALLENGER = "challenger"  # the latest version that was registered but not promoted

Promote = Literal["auto"] | bool  # auto: the gate decides; True (--promote) / False (--no-promote) override it


@dataclass(frozen=True)
class Standing:
    """What the gate knows of a registered version: its number, validation accuracy and validation split."""

    version: str
    val_accuracy: float | None  # None: the run it came from logged no val_accuracy
    val_digest: str | None  # MLflow's digest of the validation split; None: the run logged no dataset


@dataclass(frozen=True)
class Decision:
    """The alias a version gets, and why (printed by the export, tagged on the version)."""

    version: str
    alias: Literal["champion", "challenger"]
    reason: str

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION

    def uri(self, name: str) -> str:
        """The URI to load or serve this version by: ``models:/<name>@champion`` while it is the champion."""
        return f"models:/{name}@{CHAMPION}" if self.promoted else f"models:/{name}/{self.version}"

    def line(self, name: str) -> str:
        """One console line: what the champion alias names now, or why this version was not promoted."""
        if self.promoted:
            return f"champion: {self.uri(name)} is version {self.version} ({self.reason})"
        return f"not promoted: version {self.version} is {name}@{CHALLENGER}; {self.reason}"


def decide(candidate: Standing, champion: Standing | None, promote: Promote = "auto") -> Decision:
    """The alias ``candidate`` gets, given the current ``champion`` (None: there is none yet).

    It becomes champion when its validation accuracy is at least the champion's on the same
    validation split; on a tie the newer version (the higher number) wins, so the answer does not
    depend on which of two equal exports asks first.
    """
    def alias(name: Literal["champion", "challenger"], reason: str) -> Decision:
        return Decision(candidate.version, name, reason)

    if champion is not None and champion.version == candidate.version:  # --no-promote does not demote it
        return alias(CHAMPION, f"version {candidate.version} is already the champion")
    if promote is True:
        return alias(CHAMPION, "promoted by --promote")
    if promote is False:
        return alias(CHALLENGER, "--no-promote given")
    if champion is None:
        return alias(CHAMPION, "no earlier champion")
    against = f"champion: version {champion.version}"
    if champion.val_digest is None or champion.val_accuracy is None:
        return alias(CHALLENGER, f"nothing to compare with: the {against} records no validation accuracy or "
                                 "split (--promote replaces it)")
    if candidate.val_digest is None or candidate.val_accuracy is None:
        return alias(CHALLENGER, f"nothing to compare: version {candidate.version} records no validation accuracy "
                                 f"or split ({against})")
    if candidate.val_digest != champion.val_digest:
        return alias(CHALLENGER, f"different validation split: {candidate.val_digest[:12]} vs "
                                 f"{champion.val_digest[:12]} ({against})")
    scores = f"val_accuracy {candidate.val_accuracy:.4f} vs {champion.val_accuracy:.4f} ({against})"
    wins = (candidate.val_accuracy, int(candidate.version)) > (champion.val_accuracy, int(champion.version))
    if candidate.val_accuracy == champion.val_accuracy:
        verdict = "tie, newer" if wins else "tie, older"
    else:
        verdict = "better" if wins else "worse"
    return alias(CHAMPION if wins else CHALLENGER, f"{verdict}: {scores}")
