"""PACS integration: results as DICOM (Secondary Capture + TID 1500 SR) and a C-STORE listener.

Integrators put ``cxr-infer serve-dicom`` behind a PACS: studies arrive by C-STORE, results go
back as a new series in the source study, in forms every viewer shows (the SC) and every
downstream system parses (the SR).
"""
