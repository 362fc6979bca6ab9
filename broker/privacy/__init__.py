"""The broker's side of de-identification: pseudonym keys per recipient domain and the persistent
privacy budget ledger (the privacy and utility report is ``broker.assurance``)."""
