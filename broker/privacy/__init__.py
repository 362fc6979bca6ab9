"""The broker's side of de-identification: pseudonym keys per recipient domain, the persistent
privacy budget ledger, and the privacy and utility report (issue 5)."""
