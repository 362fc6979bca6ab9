"""Key management (C1.6, C1.7): the key-encryption key, data keys per subject, shredding."""
