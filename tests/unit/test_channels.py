"""The 10-20 vocabulary (docs/reference.md §1.3) and channel-name normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from neurolm.channels import (
    PAD_INDEX,
    STANDARD_1020,
    UnknownChannelError,
    channel_index,
    channel_indices,
    normalize_channel_name,
    select_channels,
)


def test_vocabulary_matches_the_official_list():
    assert len(STANDARD_1020) == 139
    assert len(set(STANDARD_1020)) == 139
    assert STANDARD_1020[PAD_INDEX] == "pad" and PAD_INDEX == 136
    # Spot checks against docs/reference.md §1.3's numbered table.
    expected = {"FP1": 0, "FZ": 19, "T7": 37, "CZ": 41, "T8": 45, "O2": 82, "T3": 88, "T5": 89, "T4": 90,
                "T6": 91, "A1": 94, "A2": 95, "CFC1": 96, "CFC3": 98, "CCP1": 104, "CCP4": 107, "T1": 112,
                "FTT9h": 114, "TPP10h": 119, "FP1-F7": 120, "P4-O2": 135, "I1": 137, "I2": 138}  # fmt: skip
    assert {name: STANDARD_1020.index(name) for name in expected} == expected


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        ("EEG FP1-REF", "FP1"),
        ("EEG FP1-LE", "FP1"),
        ("Fc5.", "FC5"),
        ("Cz..", "CZ"),
        ("T10.", "T10"),
        ("Fp1", "FP1"),
        ("FP1-A1", "FP1"),
        ("EEG T3-REF", "T3"),
        ("EEG F4-M1", "F4"),
        ("EEG Fp1", "FP1"),
        ("POL Fp2", "FP2"),
        ("ftt9H", "FTT9h"),
        ("FP1-F7", "FP1-F7"),  # bipolar names the vocabulary lists stay bipolar
        ("EEG A2-A1", "A2"),
    ],
)
def test_real_file_spellings_map_to_the_vocabulary(raw_name, expected):
    assert normalize_channel_name(raw_name) == expected


@pytest.mark.parametrize(
    "raw_name",
    ["EEG EKG1-REF", "ECG ECG", "EMG chin", "EOG E1-M2", "PHOTIC-REF", "EEG 20-REF", "F3-P3", "A1-Cz",
     "RAW-0", "", "EEG ROC-REF", "IBI"],
)  # fmt: skip
def test_unknown_names_are_not_guessed(raw_name):
    assert normalize_channel_name(raw_name) is None
    with pytest.raises(UnknownChannelError, match="not in the 10-20 vocabulary"):
        channel_index(raw_name or "?")


def test_old_and_new_temporal_names_keep_distinct_rows():
    assert channel_index("EEG T3-REF") == 88 and channel_index("T7") == 37
    assert channel_index("T5") != channel_index("P7")
    assert (
        channel_index("pad") == PAD_INDEX and normalize_channel_name("pad") is None
    )  # padding is no channel
    np.testing.assert_array_equal(channel_indices(["Fp1", "EEG T4-REF"]), np.array([0, 90], dtype=np.int16))


def test_select_channels_reports_unknown_and_duplicates():
    sel = select_channels(["EEG FP1-REF", "EEG T3-REF", "EEG EKG1-REF", "Fp1", "PHOTIC-REF"])
    assert sel.names == ("FP1", "T3")
    assert sel.source_names == ("EEG FP1-REF", "EEG T3-REF")
    assert sel.indices.dtype == np.int16 and sel.indices.tolist() == [0, 88]
    assert sel.unknown == ("EEG EKG1-REF", "PHOTIC-REF")
    assert sel.duplicates == ("Fp1",)


def test_select_channels_with_a_required_order_and_exclusions():
    sel = select_channels(
        ["EEG C3-M2", "EEG F4-M1", "EOG E1-M2", "EEG O2-M1"], required=["F4", "C4", "O2", "C3"]
    )
    assert sel.names == ("F4", "O2", "C3") and sel.missing == ("C4",)
    sel = select_channels(["FP1", "M1", "M2", "VEO"], exclude=["M1", "M2"])
    assert sel.names == ("FP1",) and sel.unknown == ("VEO",)
