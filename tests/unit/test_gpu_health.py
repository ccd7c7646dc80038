"""GPU health verdicts: which readings quarantine a GPU, and that it stays quarantined."""

from __future__ import annotations

from nxrd.supervisor.gpu_health import Health, Judge, Reading, Verdict, quarantined

judge = Judge()
A, B = "GPU-a", "GPU-b"


def polls(*rounds: list[Reading]) -> tuple[dict[str, Health], list[list[Verdict]]]:
    known: dict[str, Health] = {}
    said = []
    for readings in rounds:
        known, verdicts = judge(known, readings)
        said.append(verdicts)
    return known, said


def test_healthy_gpus_stay_in_service() -> None:
    known, said = polls([Reading(A), Reading(B)], [Reading(A, ecc_uncorrected=0)] * 3)
    assert said == [[], []] and quarantined(known) == {}


def test_a_critical_xid_quarantines_at_once_and_application_xids_do_not() -> None:
    known, said = polls(
        [Reading(A, xids=(13, 43)), Reading(B)],  # a bad kernel and a stopped app: the app's fault
        [Reading(A), Reading(B, xids=(79, 13))],  # 79: fallen off the bus
    )
    assert said == [[], [Verdict(B, "Xid 79")]]
    assert quarantined(known) == {B: "Xid 79"}


def test_one_missed_poll_is_forgiven_two_in_a_row_are_not() -> None:
    hung = Reading(A, answered=False, error="timed out after 2s")
    _, said = polls([hung], [Reading(A)], [hung])
    assert said == [[], [], []]
    _, said = polls([hung], [hung])
    assert said == [[], [Verdict(A, "not answering (timed out after 2s, 2 polls in a row)")]]


def test_new_uncorrected_ecc_errors_quarantine_but_old_ones_are_the_baseline() -> None:
    _, said = polls(
        [Reading(A, ecc_uncorrected=4)],  # errors from before nxrd started: the baseline
        [Reading(A, ecc_uncorrected=4)],
        [Reading(A, ecc_uncorrected=6)],
    )
    assert said == [[], [], [Verdict(A, "2 uncorrected ECC errors")]]


def test_quarantine_is_sticky_and_said_once() -> None:
    known, said = polls([Reading(A, xids=(48,))], [Reading(A)], [Reading(A, xids=(48,))])
    assert said == [[Verdict(A, "Xid 48")], [], []]
    assert quarantined(known) == {A: "Xid 48"}
