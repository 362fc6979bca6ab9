"""The private certificate authority behind every mutual-TLS link (C1.2, C2.1, C3.2, C4.2)."""
