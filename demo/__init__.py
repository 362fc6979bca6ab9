"""The demo: the reference path, the consent and policy story and the broker service, told end to
end on the embedded defaults (``broker demo``), with the reference webhook receiver.

It uses the product; the product never imports it (``broker demo`` is an entry point).
"""
