"""The model identity every DICOM result carries, and the result UIDs derived from it.

A result must be traceable to the exact model file that produced it (name, version, sha256),
and it must be idempotent: re-sending it after a crash or a retry has to replace the copy the
PACS already holds, never add a second one. Deriving the Series and SOP Instance UIDs from the
source instance and the model hash gives both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from cxr_infer import __version__ as TOOLKIT_VERSION

MANUFACTURER = "cxr-toolkit"


@dataclass(frozen=True)
class ModelIdentity:
    """Name, version (architecture and export time) and ONNX file sha256 of the model."""

    name: str
    version: str
    sha256: str

    @classmethod
    def of(cls, classifier) -> "ModelIdentity":
        """Read the identity of a loaded :class:`cxr_infer.api.Classifier`."""
        info = classifier.info
        return cls(
            name=info.name or Path(info.path).stem or info.model,
            version=f"{info.model} {info.exported_at}",
            sha256=info.sha256,
        )

    @property
    def software_versions(self) -> list[str]:
        """SoftwareVersions values: the model's own version and the toolkit that ran it."""
        return [self.version[:64], f"{MANUFACTURER} {TOOLKIT_VERSION}"]  # LO values

    @property
    def description(self) -> str:
        return f"classification by model {self.name} ({self.version}), ONNX file sha256 {self.sha256}"


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # leading zeros, though not standard, occur in real data and are harmless


def uid_problem(uid: object) -> str | None:
    """Why a SOP Instance UID cannot be used (missing, or not digits and dots within 64
    characters, as ``../`` is not), or None."""
    if not uid:
        return "the DICOM input has no SOP Instance UID (0008,0018)"
    if not (len(str(uid)) <= 64 and _UID.fullmatch(str(uid))):
        return f"SOP Instance UID {str(uid)[:80]!r} is not a valid UID (digits and dots, at most 64 characters)"
    return None


def result_uid(source_sop_instance_uid: str, model: ModelIdentity, role: str) -> str:
    """A UID that is the same every time for one (source instance, model file, role)."""
    return generate_uid(entropy_srcs=[source_sop_instance_uid, model.sha256, role])
