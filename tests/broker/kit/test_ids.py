"""The subject hasher's digest is HMAC-SHA-256 of the subject under the key, whatever came
before it (the keyed state is copied per subject, never updated in place)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from broker.kit.ids import SUBJECT_HASH_PREFIX, SubjectHasher

KEY = bytes(range(32))


@given(st.lists(st.text(st.characters(blacklist_categories=["Cs"])), min_size=1, max_size=5))
def test_subject_hash_is_hmac_sha256_of_each_subject(subjects: list[str]) -> None:
    hasher = SubjectHasher(KEY)
    for subject in subjects:
        expected = hmac.new(KEY, subject.encode("utf-8"), hashlib.sha256)
        assert hasher(subject) == SUBJECT_HASH_PREFIX + expected.hexdigest()
