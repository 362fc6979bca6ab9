"""Rego engines: the interface every engine offers (load a bundle, evaluate a rule; undefined is
its own answer, failures fail closed) and the embedded engine on regorus. The OPA server engine
(``connectors.opa``) offers the same interface."""
