"""Adapters: one module (or small package) per technology.  Each implements ports of
:mod:`etrans.app.ports`; blocking clients run in threads behind a CapacityLimiter."""
