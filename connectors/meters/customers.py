"""Synthetic customers for the simulated meters: obviously fake names, addresses and accounts.

The broker must show that personal data (name, address, account number) stays apart from the
readings and never leaves without consent (T5). The demo and tests need such data to protect;
it is built here from (seed, meter number), from word lists nobody would mistake for a real
person ("Testperson", "Example Street", "Sampleton"), so a fixture can never leak anyone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_FIRST = (
    "Alex", "Sam", "Jo", "Chris", "Robin", "Pat", "Charlie", "Jamie", "Morgan", "Taylor",
    "Casey", "Jordan", "Riley", "Avery", "Quinn", "Drew",
)  # fmt: skip
_LAST = (
    "Testperson", "Example", "Sample", "Placeholder", "Fictitious", "Dummy", "Mockworth",
    "Specimen", "Madeup", "Notreal",
)  # fmt: skip
_STREETS = (
    "Example Street", "Sample Road", "Placeholder Lane", "Fictional Avenue", "Mock Close",
    "Specimen Way", "Test Crescent", "Imaginary Row",
)  # fmt: skip
_TOWNS = ("Sampleton", "Exampleford", "Testbury", "Dummyham", "Fakely", "Mockbridge")
_UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # the letters a UK inward code may use
_PERSON = b"x1332-sim-cust"


@dataclass(frozen=True, slots=True)
class Customer:
    """One customer as the utility's billing system would hold them."""

    customer_ref: str
    name: str
    address: str
    account_number: str


def fake_customer(seed: int, index: int, customer_ref: str, postcode_area: str) -> Customer:
    """The synthetic customer of meter ``index`` (deterministic from the seed)."""
    message = seed.to_bytes(32, "big", signed=True) + index.to_bytes(8, "big")
    d = hashlib.blake2b(message, digest_size=16, person=_PERSON).digest()
    inward = f"{d[4] % 10}{_UNIT_LETTERS[d[5] % 20]}{_UNIT_LETTERS[d[6] % 20]}"
    address = (
        f"{1 + d[2] % 180} {_STREETS[d[3] % len(_STREETS)]}, "
        f"{_TOWNS[d[7] % len(_TOWNS)]} {postcode_area} {inward}"
    )
    return Customer(
        customer_ref=customer_ref,
        name=f"{_FIRST[d[0] % len(_FIRST)]} {_LAST[d[1] % len(_LAST)]}",
        address=address,
        account_number=f"ACC{int.from_bytes(d[8:16], 'big') % 10**10:010d}",
    )
