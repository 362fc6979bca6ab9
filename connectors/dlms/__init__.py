"""DLMS/COSEM (IEC 62056) as the reference meters speak it: security suite 0 ciphering and the
load-profile DataNotification of ``docs/dlms-profile.md``."""
