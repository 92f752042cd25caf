"""The promotion gate as a pure function: which alias a new version gets against the current champion."""
import pytest

from mnist99.delivery.promotion import CHALLENGER, CHAMPION, Standing, decide

SPLIT, OTHER_SPLIT = "a" * 32, "b" * 32
CHAMP = Standing("3", 0.9940, SPLIT)


def new(accuracy: float | None, digest: str | None = SPLIT, version: str = "4") -> Standing:
    return Standing(version, accuracy, digest)


@pytest.mark.parametrize(("candidate", "champion", "promote", "alias", "reason"), [
    (new(0.9930), CHAMP, "auto", CHALLENGER, "worse: val_accuracy 0.9930 vs 0.9940 (champion: version 3)"),
    (new(0.9940), CHAMP, "auto", CHAMPION, "tie, newer: val_accuracy 0.9940 vs 0.9940 (champion: version 3)"),
    (new(0.9940, version="2"), CHAMP, "auto", CHALLENGER, "tie, older: val_accuracy 0.9940 vs 0.9940"),
    (new(0.9950), CHAMP, "auto", CHAMPION, "better: val_accuracy 0.9950 vs 0.9940 (champion: version 3)"),
    (new(0.9990, OTHER_SPLIT), CHAMP, "auto", CHALLENGER, f"different validation split: {'b' * 12} vs {'a' * 12}"),
    (new(0.5), None, "auto", CHAMPION, "no earlier champion"),
    (new(None, None), None, "auto", CHAMPION, "no earlier champion"),
    (new(None, None), CHAMP, "auto", CHALLENGER, "nothing to compare: version 4 records no validation accuracy"),
    (new(0.9990), Standing("3", None, None), "auto", CHALLENGER, "the champion: version 3 records no validation accuracy"),
    (Standing("3", 0.9, SPLIT), CHAMP, "auto", CHAMPION, "version 3 is already the champion"),
    (Standing("3", 0.9, SPLIT), CHAMP, False, CHAMPION, "version 3 is already the champion"),  # not demoted
    (new(0.9000), CHAMP, True, CHAMPION, "promoted by --promote"),
    (new(0.9000, OTHER_SPLIT), CHAMP, True, CHAMPION, "promoted by --promote"),
    (new(0.9990), CHAMP, False, CHALLENGER, "--no-promote"),
    (new(0.9990), None, False, CHALLENGER, "--no-promote"),
])
def test_gate(candidate, champion, promote, alias, reason):
    decision = decide(candidate, champion, promote)
    assert (decision.alias, decision.version) == (alias, candidate.version)
    assert reason in decision.reason


def test_the_console_line_and_uri_name_the_alias_to_serve():
    won = decide(new(0.9950), CHAMP)
    assert won.uri("m") == "models:/m@champion"
    assert won.line("m") == "champion: models:/m@champion is version 4 (better: val_accuracy 0.9950 vs 0.9940 " \
                            "(champion: version 3))"
    lost = decide(new(0.9930), CHAMP)
    assert lost.uri("m") == "models:/m/4"
    assert lost.line("m") == "not promoted: version 4 is m@challenger; worse: val_accuracy 0.9930 vs 0.9940 " \
                             "(champion: version 3)"
    assert "\n" not in lost.line("m")
