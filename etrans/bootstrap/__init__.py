"""The one place that builds adapters and wires them into services.

One module per subcommand (:mod:`.serve`, :mod:`.sendmail`, :mod:`.fetchlog`, :mod:`.dev`), each
with ``build(settings)`` returning the ``main(shutdown)`` coroutine function that
:func:`etrans.runtime.run` supervises.  What they share is built by one function each, so the
subcommands cannot drift apart: :mod:`.stores` chooses, per backend, the real adapter or the
``etrans dev`` stand-in behind the same port; :mod:`.configs` builds the hypercorn, pipeline, SMTP
and Redis configurations; :mod:`.api` wires the HTTP API; :mod:`.workers` the sendmail and
fetchlog workers.
"""
