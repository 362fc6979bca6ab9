"""Simulated DLMS/COSEM smart meters: household load, ciphered pushes, key transfer, attacks.

``load`` models what households import, ``simulator`` turns it into the frames meters push
(``SimulatedMeter``, ``Fleet``), ``files`` writes the key file, customers and captures, and
``attacks`` builds the frames of the X.1332 threats the MDMS must withstand (T2, T3).
"""
